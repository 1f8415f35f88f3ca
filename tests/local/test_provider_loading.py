"""Serving a local model that is still loading (issue 23 §3): the load is not the request's time,
the event loop queues requests (and answers /metrics) while a model loads, a server loads its local
models at start, the queue gauges drop expired and abandoned requests at once, and the ``threads``
option reaches the thread that runs torch. A fake engine stands in for the model, so each test
controls exactly when loading and decoding happen."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from ponder import Client, Config  # noqa: E402
from ponder._exceptions import ModelFileError, ProviderTimeout  # noqa: E402
from ponder._types import ChatRequest, Completion  # noqa: E402
from ponder.local import _runtime  # noqa: E402
from ponder.local._provider import LocalProvider  # noqa: E402

WAIT_S = 30.0  # only ever reached when the behaviour under test is broken


class FakeTokenizer:
    stop_ids = frozenset()

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return [1, 2, 3]

    def decode(self, ids: list[int]) -> str:
        return "".join(f"t{i} " for i in ids)


class FakeStream:
    """What ``Engine.stream`` returns: token lists, then ``stats`` and ``finish_reason``."""

    def __init__(self, engine: FakeEngine, n: int) -> None:
        self.stats, self.finish_reason = SimpleNamespace(new_tokens=0), "length"
        self._gen = self._tokens(engine, n)

    @staticmethod
    def _tokens(engine: FakeEngine, n: int):
        for i in range(n):
            engine.threads_seen.append(torch.get_num_threads())
            if engine.step is not None:
                engine.step()
            yield [i]

    def __iter__(self) -> FakeStream:
        return self

    def __next__(self) -> list[int]:
        chunk = next(self._gen)
        self.stats.new_tokens += len(chunk)
        return chunk

    def close(self) -> None:
        self._gen.close()


class FakeEngine:
    """Decodes token i at step i; ``step`` (if set) runs before each step, on the worker thread."""

    def __init__(self, step=None) -> None:
        self.tokenizer, self.step, self.threads_seen = FakeTokenizer(), step, []

    def stream(self, ids, max_tokens, params, *, seed=None) -> FakeStream:
        return FakeStream(self, max_tokens)


class Loader:
    """Stands in for ``load_engine``: records each call, and blocks until released if asked to."""

    def __init__(self, engine: FakeEngine, *, block: bool = False, fail_first: bool = False) -> None:
        self.engine, self.calls = engine, []
        self.started, self.release = threading.Event(), threading.Event()
        self.fail_first = fail_first
        if not block:
            self.release.set()

    def __call__(self, path, draft=None, **kwargs):
        self.calls.append(path)
        self.started.set()
        assert self.release.wait(WAIT_S)
        if self.fail_first and len(self.calls) == 1:
            raise ModelFileError("not a readable GGUF file", path=str(path))
        return self.engine


def depth(provider: LocalProvider) -> dict[str, float]:
    return {name.removeprefix("ponder_local_requests_"): v for name, _, _, v in provider.gauges()}


def wait_for(check) -> bool:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def ask(max_tokens: int = 3) -> ChatRequest:
    return ChatRequest.of("hi", max_tokens=max_tokens)


@pytest.mark.parametrize("how", ["sync", "async"])
def test_the_load_does_not_count_in_timeout_s(monkeypatch, how: str) -> None:
    from ponder.local import _provider

    monkeypatch.setattr(_provider, "_LOAD_POLL_S", 0.05)  # callers look at their deadline often
    loader = Loader(FakeEngine(step=lambda: time.sleep(0.1)), block=True)  # each step outlasts a look
    monkeypatch.setattr(_runtime, "load_engine", loader)
    provider = LocalProvider("model.gguf", timeout_s=1.0)
    result: list[object] = []
    call = (lambda: provider.complete(ask(), "m")) if how == "sync" else (lambda: asyncio.run(provider.acomplete(ask(), "m")))

    def run() -> None:
        try:
            result.append(call())
        except ProviderTimeout as exc:
            result.append(exc)

    caller = threading.Thread(target=run)
    caller.start()
    assert loader.started.wait(WAIT_S)
    caller.join(1.5)  # longer than timeout_s passes while the model loads
    assert caller.is_alive() and not result  # still waiting for the load, not timed out
    loader.release.set()
    caller.join(WAIT_S)
    assert isinstance(result[0], Completion) and result[0].text == "t0 t1 t2 "
    provider.close()


async def test_the_event_loop_queues_requests_while_a_model_loads(monkeypatch) -> None:
    loader = Loader(FakeEngine(), block=True)
    monkeypatch.setattr(_runtime, "load_engine", loader)
    provider = LocalProvider("model.gguf")
    watchdog = threading.Timer(WAIT_S / 3, loader.release.set)  # frees a loop that the load blocked
    watchdog.start()
    first = asyncio.create_task(provider.acomplete(ask(), "m"))
    assert await asyncio.to_thread(loader.started.wait, WAIT_S)
    second = asyncio.create_task(provider.acomplete(ask(), "m"))
    await asyncio.sleep(0.05)  # the second request is queued on this loop meanwhile
    assert not loader.release.is_set()  # the loop ran while the model was loading
    assert depth(provider) == {"waiting": 2, "running": 0}  # what /metrics reports during the load
    loader.release.set()
    watchdog.cancel()
    answers = await asyncio.gather(first, second)
    assert [a.text for a in answers] == ["t0 t1 t2 "] * 2
    assert loader.calls == ["model.gguf"]  # loaded once
    provider.close()


def test_a_failed_load_reaches_every_waiting_request_and_the_next_one_retries(monkeypatch) -> None:
    loader = Loader(FakeEngine(), block=True, fail_first=True)
    monkeypatch.setattr(_runtime, "load_engine", loader)
    provider = LocalProvider("model.gguf")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            provider.complete(ask(), "m")
        except ModelFileError as exc:
            errors.append(exc)

    callers = [threading.Thread(target=call) for _ in range(2)]
    callers[0].start()
    assert loader.started.wait(WAIT_S)
    callers[1].start()
    assert wait_for(lambda: depth(provider)["waiting"] == 2)  # both queued behind the load
    loader.release.set()
    for c in callers:
        c.join(WAIT_S)
    assert len(errors) == 2
    assert provider.complete(ask(), "m").text == "t0 t1 t2 "
    assert len(loader.calls) == 2
    provider.close()


async def test_gauges_drop_abandoned_and_expired_requests_while_the_worker_is_busy(monkeypatch) -> None:
    in_step, go_on = threading.Event(), threading.Event()

    def step() -> None:  # the first step holds the worker until the test lets it go
        in_step.set()
        assert go_on.wait(WAIT_S)

    monkeypatch.setattr(_runtime, "load_engine", Loader(FakeEngine(step)))
    provider = LocalProvider("model.gguf", max_concurrency=1, timeout_s=WAIT_S)
    busy = asyncio.create_task(provider.acomplete(ask(), "m"))
    assert await asyncio.to_thread(in_step.wait, WAIT_S)
    abandoned = asyncio.create_task(provider.acomplete(ask(), "m"))
    await asyncio.sleep(0.05)
    assert depth(provider) == {"waiting": 1, "running": 1}
    abandoned.cancel()  # the caller leaves while its request waits behind the busy worker
    await asyncio.sleep(0.05)
    assert depth(provider) == {"waiting": 0, "running": 1}

    provider.timeout_s = 0.1
    late = asyncio.create_task(provider.acomplete(ask(), "m"))
    with pytest.raises(ProviderTimeout):
        await late
    assert depth(provider) == {"waiting": 0, "running": 1}  # expired: out of the queue at once
    go_on.set()
    assert (await busy).text == "t0 t1 t2 "
    provider.close()


def test_the_threads_option_sets_torch_threads_where_the_model_runs(monkeypatch) -> None:
    engine = FakeEngine()
    monkeypatch.setattr(_runtime, "load_engine", Loader(engine))
    assert torch.get_num_threads() == 1  # tests/local/conftest.py
    provider = LocalProvider("model.gguf", threads=2)
    provider.complete(ask(), "m")
    assert engine.threads_seen and set(engine.threads_seen) == {2}
    provider.close()


def test_a_server_loads_its_local_models_at_start(monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from ponder.server import create_app

    loader = Loader(FakeEngine())
    monkeypatch.setattr(_runtime, "load_engine", loader)
    config = Config.model_validate({"providers": {
        "pinned": {"type": "local", "path": "pinned.gguf"},
        "named": {"type": "local"},  # no path: the model name says which (here a file)
    }, "cache": {"enabled": False}})
    with Client(config, cache=False) as client:
        app = create_app(client, {}, models=["pinned:m", f"named:{__file__}"])
        assert loader.calls == []
        with TestClient(app.fastapi) as http:
            assert sorted(loader.calls) == sorted(["pinned.gguf", __file__])  # before any request
            assert http.get("/healthz").status_code == 200
            assert client.provider("pinned").complete(ask(), "m").text == "t0 t1 t2 "
        assert len(loader.calls) == 2  # the request found its model loaded
