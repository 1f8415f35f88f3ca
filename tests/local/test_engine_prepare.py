"""The engine as a server runs it (issue 23): every step graph captured once, when the engine is
built, with a cache set per stream, so bursts of requests allocate and capture nothing; captures
timed apart from decoding; a request that cannot fit refused before anything is allocated; another
model's work kept out of a capture; and every entry point run on the model's device."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ponder._exceptions import ConfigError, ContextTooLong  # noqa: E402
from ponder.local import _engine  # noqa: E402
from ponder.local._bench import run_bench, step_times  # noqa: E402
from ponder.local._device_loop import DeviceLoop  # noqa: E402
from ponder.local._engine import Engine, make_drafter  # noqa: E402
from ponder.local._model import KVCache, Transformer  # noqa: E402
from ponder.local._sampling import SamplingParams  # noqa: E402

from .conftest import tiny_model  # noqa: E402

PROMPT = [5, 9, 12, 40, 7, 33, 5, 9, 12, 40, 21, 3, 17, 5, 9, 2, 50, 61, 5, 9, 12]
SETTINGS = [SamplingParams(), SamplingParams(temperature=0.8, top_p=0.9), SamplingParams(temperature=1.0)]


class _Spy:
    """Counts cache allocations, device-loop builds and captures made inside a generation."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inside = 0
        self.counts = {"KVCache": 0, "DeviceLoop": 0, "capture": 0}
        for cls, name, label in ((KVCache, "__init__", "KVCache"), (DeviceLoop, "__init__", "DeviceLoop"), (DeviceLoop, "_capture", "capture")):
            monkeypatch.setattr(cls, name, self._counting(getattr(cls, name), label))
        self._next = _engine.TokenStream.__next__
        monkeypatch.setattr(_engine.TokenStream, "__next__", self._inside(_engine.TokenStream.__next__))
        monkeypatch.setattr(Engine, "stream", self._inside(Engine.stream))

    def _counting(self, fn: Any, label: str) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.inside:
                self.counts[label] += 1
            return fn(*args, **kwargs)

        return wrapped

    def _inside(self, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.inside += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.inside -= 1

        return wrapped


def _drain(streams: list[Any]) -> list[list[int]]:
    got: list[list[int]] = [[] for _ in streams]
    live = set(range(len(streams)))
    while live:
        for i in sorted(live):
            try:
                got[i] += next(streams[i])
            except StopIteration:
                live.discard(i)
    return got


@pytest.mark.parametrize("draft", [None, "layers:2", "ngram"])
def test_bursts_of_requests_allocate_and_capture_nothing(draft: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tiny_model(seed=0)
    engine = Engine(target, drafter=make_drafter(draft, target), k=2, loop="device", streams=4, context=96)
    assert len(engine._caches._free) == 4 and engine.capture_s > 0
    assert {c.capacity for c in engine._caches._free} == {96 + engine.k_max + 1}  # from the context, not a power of two
    spy = _Spy(monkeypatch)
    for burst in range(2):
        streams = [engine.stream(PROMPT, 20 + i, SETTINGS[i % 3], seed=i, stop_ids=()) for i in range(4)]
        got = _drain(streams)
        assert [len(g) for g in got] == [20, 21, 22, 23], burst
        assert all(s.stats.capture_s == 0 for s in streams)
        assert spy.counts == {"KVCache": 0, "DeviceLoop": 0, "capture": 0}, burst
    assert len(engine._caches._free) == 4  # every set came back


class _Tok:
    stop_ids = ()

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return [ord(c) % 64 for c in messages[0]["content"]]


def test_the_bench_times_no_allocation_and_no_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    target = tiny_model(seed=1)
    engine = Engine(target, _Tok(), loop="device")
    spy = _Spy(monkeypatch)
    rows = run_bench(engine, ("abcabcabd", "hello hello hello"), ("ngram", "layers:2"), (2, 3), max_tokens=8, rounds=1)
    assert spy.counts == {"KVCache": 0, "DeviceLoop": 0, "capture": 0}
    assert len(rows) == 5 and all(r.capture_s > 0 and r.tokens > 0 for r in rows)
    assert all(r.tokens_match for r in rows)
    assert engine.drafter is None and engine.k == 4  # the engine handed in is left as it was


def test_a_capture_inside_a_request_is_timed_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that still needs a graph (here: the drafter was swapped after the engine was
    built) reports the capture as ``capture_s``, never inside its decode or prefill time."""
    target = tiny_model(seed=2)
    engine = Engine(target, loop="device")
    now = [0.0]

    def clock() -> float:
        now[0] += 1e-3
        return now[0]

    real = DeviceLoop._capture

    def slow_capture(self: DeviceLoop, fn: Any) -> Any:
        now[0] += 100.0  # a capture that takes 100 s of the fake clock
        return real(self, fn)

    monkeypatch.setattr(_engine, "time", type("T", (), {"perf_counter": staticmethod(clock)}))
    monkeypatch.setattr(DeviceLoop, "_capture", slow_capture)
    _, _, before = engine.generate_ids(PROMPT, 12, stop_ids=())
    assert before.capture_s == 0
    engine.drafter = make_drafter("layers:2", target)
    _, _, st = engine.generate_ids(PROMPT, 12, stop_ids=())
    assert st.capture_s >= 100 and st.drafted > 0
    assert st.prefill_s + st.decode_s < 100
    assert "graph capture" in st.summary()


def test_requests_that_cannot_fit_are_refused_before_any_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    target = tiny_model(seed=0)
    device = Engine(target, loop="device", context=40)
    host = Engine(target)
    made: list[int] = []
    real = KVCache.__init__

    def counting(self: KVCache, *args: Any, **kwargs: Any) -> None:
        made.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(KVCache, "__init__", counting)
    with pytest.raises(ContextTooLong, match="engine's context"):
        device.stream(PROMPT, 20)
    monkeypatch.setattr(_engine, "_free_bytes", lambda device: 10_000)  # 10 kB free
    with pytest.raises(ContextTooLong, match=r"need \d+\.\d+ GiB; 0\.00 GiB is free"):
        host.stream(PROMPT, 200)
    with pytest.raises(ConfigError, match="lower the context or streams"):
        Engine(target, loop="device", streams=2)
    assert not made
    monkeypatch.setattr(_engine, "_free_bytes", lambda device: None)  # unknown: allocate as asked
    host.generate_ids(PROMPT, 10, stop_ids=())
    assert [c.capacity for c in host._caches._free] == [len(PROMPT) + 10 + host.k_max + 1]  # the request's size


def test_decoding_never_overlaps_another_models_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA graph records every launch and allocation on the device: while one model's engine
    captures (when it is built), another model's worker must wait."""
    a, b = tiny_model(seed=0), tiny_model(seed=1)
    engine_b = Engine(b, loop="device")
    capturing, release = threading.Event(), threading.Event()
    real = DeviceLoop._capture

    def held_capture(self: DeviceLoop, fn: Any) -> Any:
        if self.model is a:
            capturing.set()
            release.wait(30)
        return real(self, fn)

    b_forwards: list[bool] = []
    real_forward = Transformer.forward

    def forward(self: Transformer, *args: Any, **kwargs: Any) -> Any:
        if self is b:
            b_forwards.append(release.is_set())
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(DeviceLoop, "_capture", held_capture)
    monkeypatch.setattr(Transformer, "forward", forward)
    built: list[Engine] = []
    ta = threading.Thread(target=lambda: built.append(Engine(a, loop="device")))
    ta.start()
    assert capturing.wait(30)
    tb = threading.Thread(target=lambda: engine_b.generate_ids(PROMPT, 6, stop_ids=()))
    tb.start()
    tb.join(0.5)
    assert tb.is_alive() and not b_forwards  # waiting for the capture to end
    release.set()
    ta.join(30)
    tb.join(30)
    assert built and b_forwards and all(b_forwards)


def test_every_entry_point_runs_on_the_models_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda:N with N != 0: streams, captures and Triton launches use the current device, so every
    allocation, capture and forward the engine makes happens inside ``device_guard``."""
    depth = [0]
    outside: list[str] = []

    @contextmanager
    def guard(device: Any) -> Iterator[None]:
        depth[0] += 1
        try:
            yield
        finally:
            depth[0] -= 1

    def watched(fn: Any, label: str) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not depth[0]:
                outside.append(label)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(_engine, "device_guard", guard)
    monkeypatch.setattr(Transformer, "forward", watched(Transformer.forward, "forward"))
    monkeypatch.setattr(KVCache, "__init__", watched(KVCache.__init__, "cache"))
    monkeypatch.setattr(DeviceLoop, "_capture", watched(DeviceLoop._capture, "capture"))
    target = tiny_model(seed=3)
    device = Engine(target, drafter=make_drafter("layers:2", target), k=2, loop="device")
    device.generate_ids(PROMPT, 10, SETTINGS[1], seed=0, stop_ids=())
    _drain([device.stream(PROMPT, 8, s, seed=1, stop_ids=()) for s in SETTINGS])  # more streams than sets
    device.drafter = make_drafter("ngram", target)
    device.generate_ids(PROMPT, 6, stop_ids=())  # a capture inside a request
    Engine(target, drafter=make_drafter("ngram", target)).generate_ids(PROMPT, 10, stop_ids=())  # the host loop
    step_times(Engine(target, drafter=make_drafter("layers:1", target), k=2, loop="device"), PROMPT, 2, SETTINGS[0], reps=1)
    assert not outside, outside


def test_the_device_guard_makes_the_models_cuda_device_current() -> None:
    guard = _engine.device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    with _engine.device_guard(torch.device("cpu")):
        pass


def test_a_long_prompt_is_prefilled_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Activations and attention scratch of a prefill are bounded by the chunk, not the prompt."""
    model = tiny_model(seed=4)
    tokens = torch.tensor([PROMPT * 3])  # 63 tokens
    model.setup_caches(1, 80)
    want = model(tokens, 0)[:, -1:]
    widths: list[int] = []
    real = model.ops.attention

    def attention(q: Any, *args: Any, **kwargs: Any) -> Any:
        widths.append(q.shape[2])
        return real(q, *args, **kwargs)

    model.prefill_chunk = 16
    model.setup_caches(1, 80)
    monkeypatch.setattr(model, "ops", dataclasses.replace(model.ops, attention=attention))
    got = model(tokens, 0, last_only=True)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    assert max(widths) == 16 and sum(widths) == 63 * model.args.n_layers
    out, _, _ = Engine(model, context=80).generate_ids(PROMPT * 3, 4, stop_ids=())
    model.prefill_chunk = 2048
    assert out == Engine(model, context=80).generate_ids(PROMPT * 3, 4, stop_ids=())[0]


def test_the_provider_keeps_a_cache_set_per_request_it_decodes_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from ponder.local._provider import LocalProvider

    seen: dict[str, Any] = {}

    def load(cls: Any, path: Any, draft: Any = None, **kwargs: Any) -> str:
        seen.update(kwargs)
        return "engine"

    monkeypatch.setattr(Engine, "load", classmethod(load))
    assert LocalProvider(str(tmp_path), runtime="torch", max_concurrency=3).engine("x") == "engine"
    assert seen["streams"] == 3
