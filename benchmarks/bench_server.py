"""Server benchmark: overhead of ``ponder serve`` over calling the upstream directly, and 500
concurrent requests that must each be answered exactly once.

Three processes on one machine: a local OpenAI-compatible upstream (tests/fakeserver.py), the
ponder server (``ponder serve --model up:m``, uvicorn), and this client (the official openai SDK).

    python benchmarks/bench_server.py [--sequential 400] [--concurrent 500] [--litellm PATH_TO_LITELLM_BIN]
    python benchmarks/bench_server.py --baseline DIR  # also a second ponder from another tree, interleaved
    python benchmarks/bench_server.py --breakdown     # where the overhead goes (CPU per call)
    python benchmarks/bench_server.py --big-body 115000  # one huge request: event-loop stalls
    python benchmarks/bench_server.py --rich 400   # only: what 20 tools + a json_schema add over a plain request

Overhead: the same prompts are sent in turn straight to the upstream and through ponder (and
through the baseline's ponder), one at a time over keep-alive connections, in an order that
rotates every request; overhead p50 = p50(through ponder) - p50(direct).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

ROOT = Path(__file__).resolve().parents[1]

UPSTREAM = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from fakeserver import FakeLLMServer
with FakeLLMServer() as srv:
    print(srv.port, flush=True)
    sys.stdin.readline()  # wait until the benchmark asks for the record
    print(json.dumps([r["body"]["messages"][-1]["content"] for r in srv.requests]), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def sequential(clients: dict[str, tuple[openai.OpenAI, str]], n: int) -> dict[str, float]:
    """Send each prompt to every target (``direct`` first in the dict), rotating the order every
    request so that all of them see the same machine state."""
    names = list(clients)
    lat: dict[str, list[float]] = {k: [] for k in names}
    for i in range(n + 20):
        msgs = [{"role": "user", "content": f"sequential {i}"}]
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            client, model = clients[name]
            t0 = time.perf_counter()
            r = client.chat.completions.create(model=model, messages=msgs)
            dt = (time.perf_counter() - t0) * 1e3
            assert r.choices[0].message.content == f"echo: sequential {i}"
            if i >= 20:  # warm-up
                lat[name].append(dt)
    out: dict[str, float] = {"n": n}
    direct = statistics.median(lat["direct"])
    for name, xs in lat.items():
        out[f"{name}_p50_ms"] = statistics.median(xs)
        out[f"{name}_p95_ms"] = pct(xs, 0.95)
        out[f"{name}_p99_ms"] = pct(xs, 0.99)
        if name != "direct":
            out[f"{name}_overhead_p50_ms"] = statistics.median(xs) - direct
            out[f"{name}_overhead_p95_ms"] = pct(xs, 0.95) - pct(lat["direct"], 0.95)
    return out


RICH_TOOLS = [{"type": "function", "function": {
    "name": f"tool_{k}", "description": f"Tool number {k}: looks something up.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"},
                                                    "tags": {"type": "array", "items": {"type": "string"}}},
                   "required": ["query"], "additionalProperties": False}, "strict": True}} for k in range(20)]
RICH_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
    "type": "object", "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer", "confidence"], "additionalProperties": False}}}


def rich_overhead(clients: dict[str, tuple[openai.OpenAI, str]], n: int) -> dict[str, float]:
    """Plain requests and requests with 20 tools and a json_schema, to the upstream directly and
    through ponder, interleaved (the order rotates every request). What the rich request adds is
    its overhead through ponder minus the plain request's overhead."""
    kinds: dict[str, dict[str, Any]] = {"plain": {}, "rich": {"tools": RICH_TOOLS, "response_format": RICH_FORMAT}}
    lat = {(k, t): [] for k in kinds for t in clients}  # type: dict[tuple[str, str], list[float]]
    order = [(k, t) for k in kinds for t in clients]
    for i in range(n + 20):
        for j in range(len(order)):
            kind, name = order[(i + j) % len(order)]
            client, model = clients[name]
            t0 = time.perf_counter()
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"rich {i}"}],
                                           **kinds[kind])
            if i >= 20:
                lat[(kind, name)].append((time.perf_counter() - t0) * 1e3)
    out: dict[str, float] = {"n": n}
    for kind in kinds:
        for name in clients:
            out[f"{kind}_{name}_p50_ms"] = statistics.median(lat[(kind, name)])
        out[f"{kind}_overhead_p50_ms"] = out[f"{kind}_ponder_p50_ms"] - out[f"{kind}_direct_p50_ms"]
    out["rich_adds_p50_ms"] = out["rich_overhead_p50_ms"] - out["plain_overhead_p50_ms"]
    return out


async def concurrent(base_url: str, model: str, n: int, tag: str) -> dict[str, float]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120,
                                http_client=None)
    lat: list[float] = []

    async def one(i: int) -> str:
        t0 = time.perf_counter()
        r = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"{tag} {i}"}])
        lat.append((time.perf_counter() - t0) * 1e3)
        return r.choices[0].message.content or ""

    t0 = time.perf_counter()
    answers = await asyncio.gather(*[one(i) for i in range(n)])
    wall = time.perf_counter() - t0
    await client.close()
    wrong = sum(a != f"echo: {tag} {i}" for i, a in enumerate(answers))
    return {"n": n, "wall_s": wall, "rps": n / wall, "p50_ms": statistics.median(lat), "p99_ms": pct(lat, 0.99),
            "wrong_answers": wrong}


async def _cpu_per_call(fn: Any, n: int = 500) -> float:
    for i in range(30):
        await fn(i)
    t = time.process_time()
    for i in range(n):
        await fn(i)
    return (time.process_time() - t) / n * 1e3


def breakdown() -> dict[str, float]:
    """CPU ms per call of the pieces of one proxied request, against an upstream in another process."""
    import httpx

    from ponder import Answer, Attempt, Client, Completion, Config, Usage
    from ponder.server import create_app

    up = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(ROOT / "tests")], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    port = int(up.stdout.readline())  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/v1"
    client = Client(Config.model_validate({"providers": {"up": {"type": "openai", "base_url": url,
                                                                "max_retries": 0}}}), cache=False)

    class Canned:  # a strategy that answers without calling anything: the server's own cost
        kind, name, models = "canned", "canned", []  # type: ignore[var-annotated]

        async def arun(self, request: Any, client: Any) -> Answer:
            c = Completion(text="hi", model="x", provider="canned", cost_usd=1e-6, usage=Usage(input_tokens=3))
            return Answer(completion=c, trace=(Attempt(model="canned:x", accepted=True),), cost_usd=1e-6)

    app = create_app(client, {"canned": Canned()})
    raw = json.dumps({"model": "ponder/canned", "messages": [{"role": "user", "content": "x"}]}).encode()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:  # the handler's whole answer, sent nowhere
        pass

    async def main() -> dict[str, float]:
        sdk = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
        hc = httpx.AsyncClient()
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        out = {
            "httpx_post_cpu_ms": await _cpu_per_call(lambda i: hc.post(url + "/chat/completions", json=body)),
            "openai_sdk_create_cpu_ms": await _cpu_per_call(lambda i: sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"x{i}"}])),
            "ponder_client_acomplete_cpu_ms": await _cpu_per_call(lambda i: client.acomplete(f"x{i}", model="up:m")),
            "ponder_handler_cpu_ms": await _cpu_per_call(lambda i: app.chat(raw, b"application/json", scope,
                                                                           receive, send), n=3000),
        }
        await hc.aclose()
        await sdk.close()
        return out

    try:
        return asyncio.run(main())
    finally:
        up.kill()


def big_body(n: int) -> dict[str, float]:
    """One ``acomplete`` with ``n`` messages beside a 5 ms heartbeat task: the wall time, and the
    longest the event loop went without running the heartbeat (a stall)."""
    from ponder import ChatRequest, ProviderSettings
    from ponder._pricing import PriceTable
    from ponder.providers import build_provider

    up = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(ROOT / "tests")], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    port = int(up.stdout.readline())  # type: ignore[union-attr]
    settings = ProviderSettings(type="openai", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0,
                                timeout_s=600)
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"} for i in range(n)]
    request = ChatRequest.of([*msgs, {"role": "user", "content": "last"}])

    async def main() -> dict[str, float]:
        p = build_provider("up", settings, PriceTable.default())
        await p.acomplete(ChatRequest.of("warm"), "m")
        gaps: list[float] = []
        done = asyncio.Event()

        async def heartbeat() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        c = await p.acomplete(request, "m")
        wall = time.perf_counter() - t0
        done.set()
        await beat
        assert c.text == "echo: last"
        return {"messages": n + 1, "wall_s": wall, "longest_stall_ms": max(gaps) * 1e3}

    try:
        return asyncio.run(main())
    finally:
        up.kill()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sequential", type=int, default=400)
    ap.add_argument("--concurrent", type=int, default=500)
    ap.add_argument("--litellm", default=None, help="path to a 'litellm' executable (its proxy) to compare")
    ap.add_argument("--json", default=None, help="write the numbers here too")
    ap.add_argument("--breakdown", action="store_true", help="only measure where the overhead goes")
    ap.add_argument("--big-body", type=int, default=0, metavar="N",
                    help="only time one request of N messages and the event-loop stalls it causes")
    ap.add_argument("--rich", type=int, default=0, metavar="N",
                    help="only compare N plain requests with N carrying 20 tools and a json_schema")
    ap.add_argument("--baseline", default=None,
                    help="a ponder source tree (e.g. `git archive BASE | tar -x -C DIR`) served side by side")
    args = ap.parse_args()
    if args.breakdown:
        print(json.dumps(breakdown(), indent=2))
        return
    if args.big_body:
        print(json.dumps(big_body(args.big_body), indent=2))
        return

    up = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(ROOT / "tests")], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    up_port = int(up.stdout.readline())  # type: ignore[union-attr]
    upstream_url = f"http://127.0.0.1:{up_port}/v1"
    port = free_port()
    tmp = Path(tempfile.mkdtemp())
    cfg = tmp / "ponder.toml"
    cfg.write_text(f'[providers.up]\ntype = "openai"\nbase_url = "{upstream_url}"\nmax_retries = 0\n'
                   f'max_concurrency = 512\n[cache]\nenabled = false\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # what `ponder serve --config CFG --model up:m` runs, without importing every CLI command
    code = ("import sys; from ponder import load_config; from ponder.server import create_app, serve; "
            "serve(create_app(load_config(sys.argv[1]), models=['up:m']), port=int(sys.argv[2]), "
            "log_level='warning')")
    server = subprocess.Popen([sys.executable, "-c", code, str(cfg), str(port)], env=env,
                              stderr=subprocess.DEVNULL)
    procs = [server]
    if args.baseline:
        base_port = free_port()
        base_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(args.baseline).resolve()),
                                                                os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(cfg), str(base_port)], env=base_env,
                                      stderr=subprocess.DEVNULL, cwd=tmp))
    results: dict[str, object] = {}
    try:
        wait_port(port)
        direct = openai.OpenAI(base_url=upstream_url, api_key="unused", max_retries=0)
        ponder = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        targets = {"direct": (direct, "m"), "ponder": (ponder, "up:m")}
        if args.baseline:
            wait_port(base_port)
            targets["baseline"] = (openai.OpenAI(base_url=f"http://127.0.0.1:{base_port}/v1", api_key="unused",
                                                 max_retries=0), "up:m")
        if args.rich:
            results["rich"] = rich_overhead({k: targets[k] for k in ("direct", "ponder")}, args.rich)
            print(json.dumps(results, indent=2))
            return
        results["sequential"] = sequential(targets, args.sequential)
        results["concurrent_direct"] = asyncio.run(concurrent(upstream_url, "m", args.concurrent, "direct"))
        results["concurrent_ponder"] = asyncio.run(concurrent(f"http://127.0.0.1:{port}/v1", "up:m",
                                                              args.concurrent, "load"))
        if args.baseline:
            results["concurrent_baseline"] = asyncio.run(concurrent(f"http://127.0.0.1:{base_port}/v1", "up:m",
                                                                    args.concurrent, "base"))
        if args.litellm:
            lport = free_port()
            lcfg = tmp / "litellm.yaml"
            lcfg.write_text("model_list:\n  - model_name: up-m\n    litellm_params:\n      model: openai/m\n"
                            f"      api_base: {upstream_url}\n      api_key: unused\n")
            master = "sk-bench-" + os.urandom(16).hex()  # the proxy refuses to start without one
            lite = subprocess.Popen([args.litellm, "--config", str(lcfg), "--port", str(lport), "--num_workers", "1"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env={**os.environ, "LITELLM_MASTER_KEY": master})
            procs.append(lite)
            wait_port(lport, timeout=120)
            lclient = openai.OpenAI(base_url=f"http://127.0.0.1:{lport}", api_key=master, max_retries=0)
            for _ in range(100):  # the port opens before the proxy is ready to answer
                try:
                    lclient.chat.completions.create(model="up-m", messages=[{"role": "user", "content": "warm"}])
                    break
                except openai.APIError:
                    time.sleep(0.5)
            d, lp = [], []
            for i in range(args.sequential + 20):
                msgs = [{"role": "user", "content": f"litellm {i}"}]
                t0 = time.perf_counter()
                direct.chat.completions.create(model="m", messages=msgs)
                t1 = time.perf_counter()
                lclient.chat.completions.create(model="up-m", messages=msgs)
                t2 = time.perf_counter()
                if i >= 20:
                    d.append((t1 - t0) * 1e3)
                    lp.append((t2 - t1) * 1e3)
            results["litellm_sequential"] = {"direct_p50_ms": statistics.median(d),
                                             "litellm_p50_ms": statistics.median(lp),
                                             "overhead_p50_ms": statistics.median(lp) - statistics.median(d)}
        up.stdin.write("dump\n")  # type: ignore[union-attr]
        up.stdin.flush()  # type: ignore[union-attr]
        seen = json.loads(up.stdout.readline())  # type: ignore[union-attr]
        load = [s for s in seen if s.startswith("load ")]
        results["exactly_once"] = {
            "upstream_received": len(load), "distinct": len(set(load)),
            "expected": args.concurrent, "ok": sorted(load) == sorted(f"load {i}" for i in range(args.concurrent))}
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        up.kill()
    import fastapi
    import uvicorn

    try:
        import httptools  # noqa: F401

        http_impl = "httptools"
    except ImportError:
        http_impl = "h11"
    results["machine"] = {"cpus": os.cpu_count(), "cpu": _cpu_name(), "python": platform.python_version(),
                          "baseline": args.baseline,
                          "platform": platform.platform(), "openai": openai.__version__,
                          "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__, "http": http_impl,
                          "load_avg_1m": os.getloadavg()[0]}
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
