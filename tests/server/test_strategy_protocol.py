"""One live-strategy protocol (run, arun, astream) and one server request path for every strategy.

Every built-in strategy streams the same events (Chosen, text, the Answer); falling through to the
next model happens before the first byte only; the server serves a strategy of one's own through
the protocol alone; and the in-flight gauge comes back to zero on every path, streams included.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import ponder.cascade as cascade
import ponder.routers as routers
from ponder import (
    Answer,
    Attempt,
    ChatRequest,
    Client,
    Completion,
    Config,
    ProviderError,
    SingleModel,
    UnknownModel,
)
from ponder.server import create_app
from ponder.server._metrics import Metrics
from ponder.strategies import Chosen, FallbackChain, FallThrough, LiveStrategy, answered
from tests.server._serverkit import Action, FakeLLMServer, LiveServer, make_config, tiny_table


def builtin_strategies() -> dict[str, LiveStrategy]:
    table = tiny_table()
    router = routers.KNNRouter(n_neighbors=3).fit(table)
    scorer = cascade.fit_scorer(table)
    two = cascade.Cascade([cascade.Rung("cheap", threshold=0.5, scorer=scorer, spec="a:m"),
                           cascade.Rung("strong", spec="b:m")], name="two-rungs")
    return {
        "single": SingleModel("a:m"),
        "fallback": FallbackChain(["dead:m", "b:m"], name="chain"),
        "cascade": two,
        "router": routers._live.LiveRouter(router, model_map={"cheap": "a:m", "strong": "b:m"}, knob=2000.0),
        "route-cascade": routers._live.RouteThenCascade(router, two, knob=2000.0),
    }


def client_for(up: FakeLLMServer, up2: FakeLLMServer) -> Client:
    # "dead" listens nowhere: connection refused, a provider failure that falls through
    return Client(make_config({"a": up.url, "b": up2.url, "dead": "http://127.0.0.1:9/v1"}), cache=False)


async def collect(events: AsyncIterator[Any]) -> list[Any]:
    return [e async for e in events]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["single", "fallback", "cascade", "router", "route-cascade"])
def test_every_builtin_strategy_streams_chosen_then_its_text_then_the_answer(
        name: str, upstream: FakeLLMServer, upstream2: FakeLLMServer) -> None:
    strategy = builtin_strategies()[name]
    prompt = ChatRequest.of("prove the theorem about primes number 5")

    async def both() -> tuple[Answer, list[Any]]:
        async with client_for(upstream, upstream2) as client:
            return await strategy.arun(prompt, client), await collect(strategy.astream(prompt, client))

    answer, events = asyncio.run(both())
    with client_for(upstream, upstream2) as client:
        synced = strategy.run(prompt, client)
    chosen, texts, last = events[0], events[1:-1], events[-1]
    assert isinstance(chosen, Chosen) and isinstance(last, Answer)
    assert all(isinstance(t, str) and t for t in texts)
    assert "".join(texts) == last.completion.text == answer.completion.text == synced.completion.text
    assert chosen.model == last.completion.spec == answer.completion.spec == synced.completion.spec
    assert last.strategy == answer.strategy == strategy.name
    assert [a.model for a in last.trace] == [a.model for a in answer.trace]
    assert last.cost_usd == pytest.approx(answer.cost_usd) and last.cost_usd > 0
    if name in ("cascade", "route-cascade"):  # decides on whole answers: streams after deciding
        assert chosen.answer == last and len(texts) == 1
    else:  # streams live: the model's own deltas, and the answer is not known up front
        assert chosen.answer is None and len(texts) > 1
    if name == "fallback":
        assert [a.model for a in last.trace] == ["dead:m", "b:m"] and last.trace[0].error


@pytest.mark.slow
def test_a_fallback_stream_falls_through_before_the_first_byte_only(
        upstream: FakeLLMServer, upstream2: FakeLLMServer) -> None:
    chain = FallbackChain(["a:m", "b:m"])
    prompt = ChatRequest.of("one two three four five")

    async def run() -> tuple[list[Any], list[Any]]:
        async with client_for(upstream, upstream2) as client:
            upstream.queue(Action(kind="status", status=503))  # before the first byte: next model
            passed = await collect(chain.astream(prompt, client))
            upstream2.queue(Action(kind="cut"))  # after the first byte: no going back
            seen: list[Any] = []
            with pytest.raises(ProviderError):
                async for event in FallbackChain(["b:m", "a:m"]).astream(prompt, client):
                    seen.append(event)
            return passed, seen

    passed, seen = asyncio.run(run())
    assert passed[0] == Chosen("b:m") and [a.model for a in passed[-1].trace] == ["a:m", "b:m"]
    assert "HTTP 503" in (passed[-1].trace[0].error or "")
    assert seen[0] == Chosen("b:m") and isinstance(seen[1], str)  # it had started streaming
    assert (upstream.count, upstream2.count) == (1, 2)  # a:m was not tried after b:m's first byte


def test_fall_through_is_one_rule_for_every_loop(upstream: FakeLLMServer, tmp_path: Path) -> None:
    class Raising:  # a client whose every call fails with the given error
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def complete(self, request: Any, model: str) -> Completion:
            time.sleep(0.01)
            raise self.exc

        async def acomplete(self, request: Any, model: str) -> Completion:
            raise self.exc

    request = ChatRequest.of("x")
    tries = FallThrough()
    for exc in (ProviderError("HTTP 500", provider="a", model="m"), UnknownModel("no such model")):
        assert tries.call(Raising(exc), request, "a:m") is exc
        assert asyncio.run(tries.acall(Raising(exc), request, "b:m")) is exc
    assert [m for m, _ in tries.errors] == ["a:m", "b:m", "a:m", "b:m"]
    assert [a.error for a in tries.failures][:2] == ["ProviderError: HTTP 500"] * 2
    assert tries.failures[0].latency_s >= 0.01 and not any(a.accepted for a in tries.failures)
    assert "all 4 models failed" in str(tries.all_failed())
    with pytest.raises(RuntimeError):  # a bug is not a provider failure: it does not pass on
        tries.call(Raising(RuntimeError("bug")), request, "c:m")
    # the cascade's provider-failure path is the same rule: a model its provider does not know
    # (here a replay table without it) passes the request on to the next rung too
    table = tmp_path / "outcomes.jsonl"
    tiny_table().df.to_json(table, orient="records", lines=True)
    config = make_config({"a": upstream.url}).model_dump()
    config["providers"]["rp"] = {"type": "replay", "path": str(table)}
    client = Client(Config.model_validate(config), cache=False)
    rungs = [cascade.Rung("x", threshold=0.5, scorer=cascade.fit_scorer(tiny_table()), spec="rp:nothing"),
             cascade.Rung("y", spec="a:m")]
    with client:
        answer = cascade.Cascade(rungs).run(request, client)
    assert answer.completion.spec == "a:m" and answer.trace[0].error and not answer.trace[0].accepted


# --- the server serves any strategy through the protocol ---------------------------------------
class Spelled:
    """A strategy of one's own (no ponder base class): it spells the prompt out, one letter a delta."""

    name = "spelled"
    models: list[str] = []

    def __init__(self, pause_s: float = 0.0) -> None:
        self.pause_s = pause_s
        self.closed = 0

    def _answer(self, request: ChatRequest) -> Answer:
        c = Completion(text=request.prompt_text, model="letters", provider="spelled", cost_usd=1e-6)
        return Answer(completion=c, trace=(Attempt(model="spelled:letters", accepted=True, cost_usd=1e-6),),
                      cost_usd=1e-6, strategy=self.name)

    def run(self, request: ChatRequest, client: Any) -> Answer:
        return self._answer(request)

    async def arun(self, request: ChatRequest, client: Any) -> Answer:
        return self._answer(request)

    async def astream(self, request: ChatRequest, client: Any) -> AsyncIterator[Any]:
        try:
            yield Chosen("spelled:letters")
            for letter in request.prompt_text:
                await asyncio.sleep(self.pause_s)
                yield letter
            yield self._answer(request)
        finally:
            self.closed += 1


class RunOnly:
    """A strategy with a synchronous ``run`` only: the server answers it, then streams it whole."""

    name = "run-only"
    models = ["a:m"]

    def run(self, request: ChatRequest, client: Any) -> Answer:
        return SingleModel("a:m").run(request, client)


@pytest.fixture
def served(upstream: FakeLLMServer, upstream2: FakeLLMServer) -> Iterator[tuple[LiveServer, dict[str, Any]]]:
    strategies: dict[str, Any] = {"spelled": Spelled(), "slow": Spelled(pause_s=0.05), "run-only": RunOnly(),
                                  "chain": FallbackChain(["a:m", "b:m"])}
    client = client_for(upstream, upstream2)
    with LiveServer(create_app(client, strategies)) as live:
        yield live, strategies
    client.close()


def sdk(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.slow
def test_the_server_streams_a_strategy_of_its_own_through_the_protocol(
        served: tuple[LiveServer, dict[str, Any]]) -> None:
    live, _ = served
    with sdk(live).chat.completions.with_streaming_response.create(
            model="ponder/spelled", messages=[{"role": "user", "content": "hello"}], stream=True) as raw:
        chunks = list(raw.parse())
        assert raw.headers["x-ponder-model"] == "spelled:letters"
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert deltas == list("hello")  # its own astream, delta by delta
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.model == "spelled:letters" and final.model_extra["ponder"]["strategy"] == "spelled"
    plain = sdk(live).chat.completions.create(model="ponder/spelled", messages=[{"role": "user", "content": "hi"}])
    assert plain.choices[0].message.content == "hi"


def test_a_strategy_with_only_run_is_served_and_streamed_whole(
        served: tuple[LiveServer, dict[str, Any]], upstream: FakeLLMServer) -> None:
    live, _ = served
    plain = sdk(live).chat.completions.create(model="ponder/run-only", messages=[{"role": "user", "content": "hi"}])
    assert plain.choices[0].message.content == "echo: hi"
    with sdk(live).chat.completions.with_streaming_response.create(
            model="ponder/run-only", messages=[{"role": "user", "content": "a b c"}], stream=True) as raw:
        chunks = list(raw.parse())
        assert float(raw.headers["x-ponder-cost-usd"]) > 0  # answered first: the cost is known up front
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b c"
    assert upstream.count == 2


def test_something_that_is_not_a_strategy_is_refused_at_startup(upstream: FakeLLMServer) -> None:
    with Client(make_config({"a": upstream.url}), cache=False) as client:
        with pytest.raises(TypeError, match="dict is not a live strategy"):
            create_app(client, {"oops": {"models": ["a:m"]}})


def gauge(live: LiveServer) -> tuple[int, dict[str, int]]:
    """(requests in flight, {status: requests done}) from /metrics."""
    text = httpx.get(live.url + "/metrics").text
    in_flight = int(re.search(r"^ponder_requests_in_flight (\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    done: dict[str, int] = {}
    for status, n in re.findall(r'^ponder_requests_total\{model="[^"]*",status="(\d+)"\} (\d+)$', text, re.M):
        done[status] = done.get(status, 0) + int(n)
    return in_flight, done


def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_the_in_flight_gauge_comes_back_to_zero_on_every_path(
        served: tuple[LiveServer, dict[str, Any]], upstream: FakeLLMServer, upstream2: FakeLLMServer) -> None:
    live, strategies = served
    msg = [{"role": "user", "content": "hi there"}]
    client = sdk(live)
    client.chat.completions.create(model="a:m", messages=msg)  # 200
    with pytest.raises(openai.NotFoundError):  # 404 before any strategy runs
        client.chat.completions.create(model="nobody", messages=msg)
    upstream.queue(Action(kind="status", status=500))
    with pytest.raises(openai.InternalServerError):  # 502 from the single model
        client.chat.completions.create(model="a:m", messages=msg)
    assert "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="ponder/chain", messages=msg, stream=True) if c.choices) == "echo: hi there"  # 200, streamed
    upstream.queue(Action(kind="cut"))  # fails after the first byte: an error event, counted as 502
    r = httpx.post(live.url + "/v1/chat/completions", json={"model": "ponder/chain", "messages": msg, "stream": True})
    assert r.status_code == 200 and '"error"' in r.text and "[DONE]" not in r.text
    assert upstream2.count == 0  # no fall-through once the stream had started
    assert gauge(live) == (0, {"200": 2, "404": 1, "502": 2})

    slow = strategies["slow"]
    body = {"model": "ponder/slow", "stream": True, "messages": [{"role": "user", "content": "x" * 400}]}
    with httpx.Client(timeout=10) as http, http.stream("POST", live.url + "/v1/chat/completions", json=body) as resp:
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
        assert gauge(live)[0] == 1  # in flight while it streams
    # the client left mid-stream: the strategy's stream is closed and the request counted once
    wait_for(lambda: slow.closed == 1 and gauge(live)[0] == 0)
    assert gauge(live) == (0, {"200": 3, "404": 1, "502": 2})


def test_metrics_count_a_request_once_whatever_ends_it() -> None:
    metrics = Metrics()
    with metrics.request() as served:
        assert metrics.in_flight == 1
        served.route, served.status = "ponder/x", 200
    with pytest.raises(RuntimeError), metrics.request() as served:
        served.route = "ponder/x"
        raise RuntimeError("the client went away")
    assert metrics.in_flight == 0
    assert dict(metrics.requests) == {("ponder/x", "200"): 1, ("ponder/x", "499"): 1}
    assert metrics.latency_count == 2


def test_answered_is_the_whole_answer_as_events() -> None:
    c = Completion(text="done", model="m", provider="p", cost_usd=2e-6)
    answer = Answer(completion=c, cost_usd=2e-6, strategy="s")
    assert answered(answer) == (Chosen("p:m", answer), "done", answer)
    empty = answer.model_copy(update={"completion": c.model_copy(update={"text": ""})})
    assert answered(empty) == (Chosen("p:m", empty), empty)


def test_the_framework_route_serves_the_same_path(upstream: FakeLLMServer) -> None:
    """Behind the guard, FastAPI's own chat route (kept for the schema) answers the same way."""
    from fastapi.testclient import TestClient

    with Client(make_config({"a": upstream.url}), cache=False) as client:
        app = create_app(client, models=["a:m"])
        with TestClient(app.fastapi) as http:
            msg = [{"role": "user", "content": "hi you"}]
            plain = http.post("/v1/chat/completions", json={"model": "a:m", "messages": msg})
            assert plain.json()["choices"][0]["message"]["content"] == "echo: hi you"
            assert plain.headers["x-ponder-model"] == "a:m"
            streamed = http.post("/v1/chat/completions", json={"model": "a:m", "messages": msg, "stream": True})
            events = [json.loads(line[6:]) for line in streamed.text.splitlines()
                      if line.startswith("data: {")]
            assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                           if e["choices"]) == "echo: hi you" and len(events) > 4
            assert streamed.text.endswith("data: [DONE]\n\n")
            assert http.post("/v1/chat/completions", json={"model": "a:m", "messages": []}).status_code == 400
            metrics = http.get("/metrics").text
    assert 'ponder_requests_total{model="a:m",status="200"} 2' in metrics
    assert "ponder_requests_in_flight 0" in metrics
