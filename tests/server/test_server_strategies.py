"""Routers and cascades behind the server: a routed request streams from the chosen model; a
cascade answers first and then streams its accepted answer."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

import ponder.cascade as cascade  # noqa: E402  (core parts: an import failure must fail, not skip)
import ponder.routers as routers  # noqa: E402
from ponder import ChatRequest, Client
from ponder.server import create_app
from tests.server._serverkit import FakeLLMServer, LiveServer, make_config, tiny_table

pytestmark = pytest.mark.slow  # each test here takes a second or more on 2 cores (see the README: fast lane)


@pytest.fixture
def served(upstream: FakeLLMServer, upstream2: FakeLLMServer) -> Iterator[tuple[LiveServer, dict[str, object]]]:
    router = routers.KNNRouter(n_neighbors=3).fit(tiny_table())
    # knob = USD-to-quality exchange rate: at 2000, a 0.875-quality answer for $1e-6 beats a
    # perfect one for $1e-4, but a 0.125-quality one does not
    live_router = routers._live.LiveRouter(router, model_map={"cheap": "a:m", "strong": "b:m"}, knob=2000.0)
    one_rung = cascade.Cascade([cascade.Rung("strong", spec="b:m")], name="single-rung")
    scorer = cascade.fit_scorer(tiny_table())
    two_rungs = cascade.Cascade([cascade.Rung("cheap", threshold=0.5, scorer=scorer, spec="a:m"),
                                 cascade.Rung("strong", spec="b:m")], name="two-rungs")
    strategies = {"router": live_router, "cascade": one_rung, "two": two_rungs}
    client = Client(make_config({"a": upstream.url, "b": upstream2.url}), cache=False)
    with LiveServer(create_app(client, strategies)) as live:
        yield live, strategies
    client.close()


@pytest.mark.parametrize("prompt", ["prove the theorem about primes number 99", "say hello to friend number 99"])
def test_a_routed_request_streams_from_the_chosen_model(served: tuple[LiveServer, dict[str, object]], prompt: str,
                                                        upstream: FakeLLMServer, upstream2: FakeLLMServer) -> None:
    live, strategies = served
    _, chosen = strategies["router"].decide(ChatRequest.of(prompt))  # type: ignore[attr-defined]
    sdk = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    with sdk.chat.completions.with_streaming_response.create(
            model="ponder/router", messages=[{"role": "user", "content": prompt}], stream=True) as raw:
        chunks = list(raw.parse())
        assert raw.headers["x-ponder-model"] == chosen
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == f"echo: {prompt}" and len(deltas) > 1  # streamed, not replayed whole
    assert (upstream.count, upstream2.count) == ((1, 0) if chosen == "a:m" else (0, 1))


def test_router_sends_hard_and_easy_queries_to_different_models(served: tuple[LiveServer, dict[str, object]]) -> None:
    _, strategies = served
    pick = {q: strategies["router"].decide(ChatRequest.of(q))[1]  # type: ignore[attr-defined]
            for q in ("prove the theorem about primes number 7", "say hello to friend number 7")}
    assert pick == {"prove the theorem about primes number 7": "b:m", "say hello to friend number 7": "a:m"}


def test_a_cascade_answers_first_then_streams_its_accepted_answer(served: tuple[LiveServer, dict[str, object]],
                                                                  upstream2: FakeLLMServer) -> None:
    live, _ = served
    sdk = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    with sdk.chat.completions.with_streaming_response.create(
            model="ponder/cascade", messages=[{"role": "user", "content": "climb"}], stream=True) as raw:
        chunks = list(raw.parse())
        assert raw.headers["x-ponder-model"] == "b:m"
        assert float(raw.headers["x-ponder-cost-usd"]) > 0  # known before the first byte
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: climb" and upstream2.count == 1
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.model_extra["ponder"]["strategy"] == "single-rung"


def test_a_failing_cascade_rung_falls_through_and_all_failing_is_one_error(
        served: tuple[LiveServer, dict[str, object]], upstream: FakeLLMServer, upstream2: FakeLLMServer) -> None:
    from tests.server._serverkit import Action

    live, _ = served
    sdk = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    upstream.queue(Action(kind="status", status=500))
    raw = sdk.chat.completions.with_raw_response.create(model="ponder/two", messages=[{"role": "user", "content": "hi"}])
    info = raw.parse().model_extra["ponder"]
    assert raw.headers["x-ponder-model"] == "b:m" and raw.parse().choices[0].message.content == "echo: hi"
    assert [t["model"] for t in info["trace"]] == ["a:m", "b:m"] and "HTTP 500" in info["trace"][0]["error"]
    assert (upstream.count, upstream2.count) == (1, 1)
    upstream.queue(Action(kind="status", status=503))
    upstream2.queue(Action(kind="status", status=500))
    with pytest.raises(openai.APIStatusError) as err:
        sdk.chat.completions.create(model="ponder/two", messages=[{"role": "user", "content": "doomed"}])
    assert err.value.status_code == 502 and err.value.body["type"] == "upstream_error"
    assert (upstream.count, upstream2.count) == (2, 2)  # each rung once, nothing retried behind the caller's back
