"""The ``local:`` provider serves like a server: text streamed as it is decoded, a first come, first
served queue with ``max_concurrency`` streams decoded in turn, ``timeout_s`` honoured, and the queue
visible as gauges. On the real SmolLM2 (llama.cpp runtime on the CPU when installed)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

torch = pytest.importorskip("torch")

from ponder._exceptions import ProviderTimeout  # noqa: E402
from ponder._types import ChatRequest, Completion  # noqa: E402
from ponder.local._provider import LocalProvider  # noqa: E402

STORY = "Write a long story about a cat who learns to sail."


def depth(provider: LocalProvider) -> dict[str, float]:
    return {name: value for name, _, _, value in provider.gauges()}


def wait_for(check, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def provider(smollm_gguf):
    p = LocalProvider(smollm_gguf, threads=1, timeout_s=300, max_concurrency=4)
    p.complete(ChatRequest.of("Hi.", max_tokens=2), "smollm2")  # load the engine once
    yield p
    p.close()


def test_stream_hands_text_over_while_the_model_is_still_decoding(provider) -> None:
    items, running_at_first = [], None
    for item in provider.stream(ChatRequest.of(STORY, max_tokens=32), "smollm2"):
        if isinstance(item, str) and running_at_first is None:
            running_at_first = depth(provider)["ponder_local_requests_running"]
        items.append(item)
    *deltas, final = items
    assert isinstance(final, Completion) and final.finish_reason == "length"
    assert running_at_first == 1  # the first piece arrived while its generation was still running
    assert len(deltas) >= 8 and all(isinstance(d, str) and d for d in deltas)
    assert "".join(deltas) == final.text
    assert final.usage.output_tokens == 32
    assert depth(provider) == {"ponder_local_requests_waiting": 0, "ponder_local_requests_running": 0}


def test_a_stop_string_is_never_streamed(provider) -> None:
    req = ChatRequest.of("Count from 1 to 10, separated by commas.", max_tokens=30, stop=(", 5",))
    *deltas, final = provider.stream(req, "smollm2")
    assert "".join(deltas) == final.text and ", 5" not in final.text and final.text.endswith("4")
    assert final.finish_reason == "stop"


@pytest.mark.slow
def test_timeout_stops_generation_with_provider_timeout(provider) -> None:
    provider.timeout_s = 0.6
    start = time.monotonic()
    with pytest.raises(ProviderTimeout, match="timeout_s=0.6"):
        provider.complete(ChatRequest.of(STORY, max_tokens=250), "smollm2")
    assert time.monotonic() - start < 0.6 + 2.0
    assert wait_for(lambda: depth(provider)["ponder_local_requests_running"] == 0, 5.0)  # stopped
    provider.timeout_s = 300
    assert provider.complete(ChatRequest.of("Say hi.", max_tokens=4), "smollm2").usage.output_tokens >= 1


@pytest.mark.slow
async def test_async_timeout_and_an_abandoned_stream_free_the_worker(provider) -> None:
    provider.timeout_s = 0.6
    with pytest.raises(ProviderTimeout):
        await provider.acomplete(ChatRequest.of(STORY, max_tokens=250), "smollm2")
    provider.timeout_s = 300
    stream = provider.astream(ChatRequest.of(STORY, max_tokens=250), "smollm2")
    first = await anext(stream)
    await stream.aclose()  # the caller walks away after one piece
    assert isinstance(first, str)
    assert await asyncio.to_thread(wait_for, lambda: depth(provider)["ponder_local_requests_running"] == 0, 5.0)


@pytest.mark.slow
def test_one_slot_serves_requests_first_come_first_served(smollm_gguf) -> None:
    provider = LocalProvider(smollm_gguf, threads=1, timeout_s=300, max_concurrency=1)
    provider.complete(ChatRequest.of("Hi.", max_tokens=2), "smollm2")
    events: list[tuple[str, int]] = []
    lock = threading.Lock()

    def ask(i: int) -> None:
        for item in provider.stream(ChatRequest.of(f"{STORY} Chapter {i}.", max_tokens=12), "smollm2"):
            with lock:
                if isinstance(item, Completion):
                    events.append(("done", i))
                elif ("first", i) not in events:
                    events.append(("first", i))

    threads = []
    for i in range(3):  # submitted one after another: each is queued before the next is sent
        threads.append(threading.Thread(target=ask, args=(i,)))
        threads[-1].start()
        assert wait_for(lambda i=i: sum(depth(provider).values()) == i + 1 or ("done", 0) in events)
    for t in threads:
        t.join(timeout=120)
    assert events == [("first", 0), ("done", 0), ("first", 1), ("done", 1), ("first", 2), ("done", 2)]
    provider.close()


@pytest.mark.slow
def test_four_slots_decode_in_turn_so_each_starts_before_any_finishes(provider) -> None:
    times: dict[int, dict[str, float]] = {}
    t0 = time.monotonic()

    def ask(i: int) -> None:
        for item in provider.stream(ChatRequest.of(f"{STORY} Chapter {i}.", max_tokens=16), "smollm2"):
            key = "done" if isinstance(item, Completion) else "first"
            times.setdefault(i, {}).setdefault(key, time.monotonic() - t0)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(times) == 4
    assert max(t["first"] for t in times.values()) < min(t["done"] for t in times.values())


def test_the_config_sets_timeout_and_concurrency_and_leaves_local_defaults_otherwise(smollm_gguf) -> None:
    from ponder import Client, Config

    config = Config.model_validate({"providers": {
        "set": {"type": "local", "path": str(smollm_gguf), "timeout_s": 7.5, "max_concurrency": 2},
        "unset": {"type": "local", "path": str(smollm_gguf)},
    }})
    with Client(config, cache=False) as client:
        configured, default = client.provider("set"), client.provider("unset")
        assert (configured.timeout_s, configured.max_concurrency) == (7.5, 2)
        assert (default.timeout_s, default.max_concurrency) == (None, 4)
