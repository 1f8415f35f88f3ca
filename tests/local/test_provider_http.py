"""``ponder serve --model local:...`` over real HTTP with the official OpenAI SDK: four concurrent
streamed requests each get their first token before any of them has finished, and /metrics shows
the local queue."""

from __future__ import annotations

import asyncio
import time

import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from ponder import Client, Config  # noqa: E402
from ponder.server import create_app  # noqa: E402
from tests.server._serverkit import LiveServer  # noqa: E402

pytestmark = pytest.mark.slow  # each test here takes a second or more on 2 cores (see the README: fast lane)

STORY = "Write a long story about a cat who learns to sail."


def gauges(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                     if line.startswith("ponder_local_"))}


@pytest.fixture(scope="module")
def live(smollm_gguf):
    common = {"type": "local", "path": str(smollm_gguf), "timeout_s": 300, "options": {"threads": 1}}
    config = Config.model_validate({
        "providers": {"four": {**common, "max_concurrency": 4}, "solo": {**common, "max_concurrency": 1}},
        "cache": {"enabled": False},
    })
    client = Client(config, cache=False)
    app = create_app(client, {}, models=["four:smollm2", "solo:smollm2"])
    with LiveServer(app) as server:
        yield server
    client.close()


async def timed_stream(sdk: openai.AsyncOpenAI, model: str, i: int, t0: float) -> tuple[float, float, str]:
    stream = await sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"{STORY} Chapter {i}."}],
        max_tokens=16, temperature=0, stream=True,
    )
    first, text = None, ""
    async for chunk in stream:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            first = first if first is not None else time.monotonic() - t0
            text += delta
    assert first is not None
    return first, time.monotonic() - t0, text


async def test_four_concurrent_streams_each_start_before_any_finishes(live) -> None:
    sdk = openai.AsyncOpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    await timed_stream(sdk, "four:smollm2", 0, time.monotonic())  # load the engine
    t0 = time.monotonic()
    results = await asyncio.gather(*(timed_stream(sdk, "four:smollm2", i, t0) for i in range(4)))
    firsts, ends = [r[0] for r in results], [r[1] for r in results]
    assert max(firsts) < min(ends), results
    assert all(len(r[2]) > 20 for r in results)
    g = gauges(live.url)
    assert g['ponder_local_requests_waiting{provider="four"}'] == 0
    assert g['ponder_local_requests_running{provider="four"}'] == 0
    await sdk.close()


async def test_metrics_show_requests_waiting_behind_a_single_slot(live) -> None:
    sdk = openai.AsyncOpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    await timed_stream(sdk, "solo:smollm2", 0, time.monotonic())  # load the engine
    seen: list[dict[str, float]] = []

    async def watch() -> None:
        while True:
            seen.append(await asyncio.to_thread(gauges, live.url))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    t0 = time.monotonic()
    results = await asyncio.gather(*(timed_stream(sdk, "solo:smollm2", i, t0) for i in range(3)))
    watcher.cancel()
    waiting = [g['ponder_local_requests_waiting{provider="solo"}'] for g in seen]
    running = [g['ponder_local_requests_running{provider="solo"}'] for g in seen]
    assert max(waiting) >= 1 and max(running) == 1, str(list(zip(waiting, running, strict=True)))  # one decodes, the others queue
    firsts, ends = sorted(r[0] for r in results), sorted(r[1] for r in results)
    assert firsts[1] > ends[0] and firsts[2] > ends[1]  # batch 1: each starts when one ends
    await sdk.close()
