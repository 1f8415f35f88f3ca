"""The clients people put in front of an OpenAI-compatible router, unchanged, against ``ponder
serve``: LangChain's ``ChatOpenAI`` (tools, structured output in both modes, streaming), the
litellm client (plain, tools, a wrong key) and instructor (TOOLS and JSON modes), each through a
plain model, a fallback chain, a verifier-only cascade, a trained cascade and a router. The upstream is the fake server, which
records every body it receives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from ponder import Client
from ponder.cascade import Cascade, Rung
from ponder.server import FallbackChain, create_app
from tests.fakeserver import Action
from tests.server._serverkit import FakeLLMServer, LiveServer, make_config, tiny_table

langchain_openai = pytest.importorskip("langchain_openai", reason="langchain-openai is not installed (dev extra)")

CALL = {"id": "call_1", "type": "function", "function": {"name": "Weather", "arguments": '{"city": "Paris"}'}}
MODELS = ["up:m", "ponder/chain", "ponder/verify", "ponder/trained", "ponder/router"]


class Weather(pydantic.BaseModel):
    """Weather in a city."""

    city: str


class Person(pydantic.BaseModel):
    name: str
    age: int


@pytest.fixture
def live(upstream: FakeLLMServer) -> Iterator[LiveServer]:
    import ponder.routers as routers
    from ponder.cascade import fit_scorer

    client = Client(make_config({"up": upstream.url}), cache=False)
    both = {"cheap": "up:m", "strong": "up:m"}  # trained on tiny_table; both names reach the fake
    strategies = {"chain": FallbackChain(["up:m"]),
                  "verify": Cascade([Rung("up:m", spec="up:m"), Rung("up:m", spec="up:m")], name="verify"),
                  "trained": Cascade([Rung("cheap", threshold=0.5, scorer=fit_scorer(tiny_table()), spec="up:m"),
                                      Rung("strong", spec="up:m")], name="trained"),
                  "router": routers._live.LiveRouter(routers.KNNRouter(n_neighbors=3).fit(tiny_table()),
                                                     model_map=both, knob=2000.0)}
    with LiveServer(create_app(client, strategies, models=["up:m"], api_key="ponder-key")) as server:
        yield server


def tool_answer(upstream: FakeLLMServer, arguments: str = '{"city": "Paris"}', name: str = "Weather") -> None:
    upstream.queue(*[Action(message={"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": name, "arguments": arguments}}]})] * 2)


def person_text(body: dict[str, Any]) -> str | None:
    return '{"name": "Ada", "age": 36}' if body.get("response_format") or body.get("tools") is None else None


# --- LangChain ------------------------------------------------------------------------------------
def chat(live: LiveServer, model: str) -> Any:
    return langchain_openai.ChatOpenAI(model=model, base_url=live.url + "/v1", api_key="ponder-key",
                                       max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_langchain_bind_tools(live: LiveServer, upstream: FakeLLMServer, model: str) -> None:
    tool_answer(upstream)
    msg = chat(live, model).bind_tools([Weather]).invoke("weather in Paris?")
    assert msg.tool_calls == [{"name": "Weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}]
    assert upstream.requests[-1]["body"]["tools"][0]["function"]["name"] == "Weather"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output(live: LiveServer, upstream: FakeLLMServer, model: str, method: str) -> None:
    if method == "function_calling":
        tool_answer(upstream, '{"name": "Ada", "age": 36}', name="Person")
    else:
        upstream.replier = lambda body: '{"name": "Ada", "age": 36}'
    out = chat(live, model).with_structured_output(Person, method=method).invoke("who?")
    assert out == Person(name="Ada", age=36)
    body = upstream.requests[-1]["body"]
    assert ("response_format" in body) if method == "json_schema" else (body["tool_choice"]["function"]["name"] == "Person")


@pytest.mark.parametrize("model", MODELS)
def test_langchain_streams(live: LiveServer, upstream: FakeLLMServer, model: str) -> None:
    text = "".join(str(chunk.content) for chunk in chat(live, model).stream("hello there"))
    assert text == "echo: hello there"


def test_langchain_streams_tool_calls(live: LiveServer, upstream: FakeLLMServer) -> None:
    tool_answer(upstream)
    final = None
    for chunk in chat(live, "ponder/chain").bind_tools([Weather]).stream("weather?"):
        final = chunk if final is None else final + chunk
    assert final is not None and final.tool_calls[0]["args"] == {"city": "Paris"}


# --- litellm --------------------------------------------------------------------------------------
def litellm_call(live: LiveServer, model: str, key: str = "ponder-key", **kw: Any) -> Any:
    litellm = pytest.importorskip("litellm", reason="litellm is not installed (dev extra)")
    return litellm.completion(model="openai/" + model, api_base=live.url + "/v1", api_key=key, num_retries=0, **kw)


@pytest.mark.parametrize("model", MODELS)
def test_litellm_plain_and_tools(live: LiveServer, upstream: FakeLLMServer, model: str) -> None:
    r = litellm_call(live, model, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "echo: hi"
    tool_answer(upstream)
    r = litellm_call(live, model, messages=[{"role": "user", "content": "weather?"}],
                     tools=[{"type": "function", "function": {"name": "Weather", "parameters": Weather.model_json_schema()}}])
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "Weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_litellm_classifies_a_wrong_key_as_authentication(live: LiveServer) -> None:
    litellm = pytest.importorskip("litellm", reason="litellm is not installed (dev extra)")
    with pytest.raises(litellm.AuthenticationError):
        litellm_call(live, "up:m", key="wrong", messages=[{"role": "user", "content": "hi"}])


# --- instructor -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("mode", ["TOOLS", "JSON"])
def test_instructor_modes(live: LiveServer, upstream: FakeLLMServer, model: str, mode: str) -> None:
    instructor = pytest.importorskip("instructor", reason="instructor is not installed (.ci/run installs it)")
    import openai

    sdk = openai.OpenAI(base_url=live.url + "/v1", api_key="ponder-key", max_retries=0)
    client = instructor.from_openai(sdk, mode=getattr(instructor.Mode, mode))
    if mode == "TOOLS":
        tool_answer(upstream, '{"name": "Ada", "age": 36}', name="Person")
    else:
        upstream.replier = lambda body: '{"name": "Ada", "age": 36}'
    out = client.chat.completions.create(model=model, response_model=Person, max_retries=0,
                                         messages=[{"role": "user", "content": "who?"}])
    assert isinstance(out, Person) and out.model_dump() == {"name": "Ada", "age": 36}
