"""The whole Chat Completions API through ``ponder serve`` and the Client (issue 20's table): what
the official openai SDK sends reaches the upstream unchanged, and answers (tool calls, ``n``
choices, logprobs, refusals, usage) come back in OpenAI's exact shape, plain and streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest

from ponder import ChatRequest, Client, SingleModel, UnsupportedRequest
from ponder.server import FallbackChain, create_app
from tests.fakeserver import Action
from tests.server._serverkit import FakeLLMServer, LiveServer, make_config

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}, "strict": True}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
HISTORY: list[dict[str, Any]] = [
    {"role": "developer", "content": "Use tools."},
    {"role": "user", "name": "ada", "content": [{"type": "text", "text": "weather in Paris?"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
]


class City(pydantic.BaseModel):
    city: str


class Person(pydantic.BaseModel):
    name: str
    age: int


PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "Person", "strict": True, "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"], "additionalProperties": False}}}


@pytest.fixture
def served(upstream: FakeLLMServer) -> Iterator[tuple[LiveServer, openai.OpenAI]]:
    client = Client(make_config({"up": upstream.url}), cache=False)
    app = create_app(client, {"chain": FallbackChain(["up:m"])}, models=["up:m"])
    with LiveServer(app) as live:
        yield live, openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)


def last_body(upstream: FakeLLMServer) -> dict[str, Any]:
    return upstream.requests[-1]["body"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("model", ["up:m", "ponder/chain"])
def test_a_tool_conversation_reaches_the_upstream_unchanged(served: Any, upstream: FakeLLMServer,
                                                            model: str) -> None:
    _, sdk = served
    sent = dict(messages=HISTORY, tools=[WEATHER], tool_choice="auto", parallel_tool_calls=False,
                logprobs=True, top_logprobs=2, user="u-1", metadata={"team": "a"}, presence_penalty=0.5,
                frequency_penalty=0.1, logit_bias={"50256": -100}, seed=7, stop=["END"],
                max_completion_tokens=64, reasoning_effort="low", service_tier="auto", store=False)
    sdk.chat.completions.create(model=model, **sent)  # type: ignore[call-overload]
    body = last_body(upstream)
    for key, value in sent.items():
        assert body[key] == value, key
    assert body["model"] == "m"
    assert "temperature" not in body and "max_tokens" not in body and "n" not in body  # never added


def test_a_field_ponder_does_not_model_passes_through(served: Any, upstream: FakeLLMServer) -> None:
    _, sdk = served
    sdk.chat.completions.create(model="up:m", messages=[{"role": "user", "content": "hi"}],
                                extra_body={"web_search_options": {"search_context_size": "low"},
                                            "top_k": 20})
    body = last_body(upstream)
    assert body["web_search_options"] == {"search_context_size": "low"} and body["top_k"] == 20


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_answer_comes_back_in_openais_shape(served: Any, upstream: FakeLLMServer,
                                                        stream: bool) -> None:
    _, sdk = served
    upstream.queue(Action(message={"role": "assistant", "content": None, "tool_calls": [CALL]}))
    args = dict(model="ponder/chain", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER])
    if not stream:
        r = sdk.chat.completions.create(**args)  # type: ignore[call-overload]
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls" and msg.content is None
        assert [c.model_dump() for c in msg.tool_calls] == [CALL]
        return
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in sdk.chat.completions.create(stream=True, **args):  # type: ignore[call-overload]
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                c = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                c["id"] = tc.id or c["id"]
                c["name"] += tc.function.name or ""
                c["arguments"] += tc.function.arguments or ""
            finish = ch.finish_reason or finish
    assert finish == "tool_calls"
    assert calls == {0: {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}}


def test_the_sdk_stream_helper_accumulates_tool_calls(served: Any, upstream: FakeLLMServer) -> None:
    _, sdk = served
    upstream.queue(Action(message={"role": "assistant", "content": None, "tool_calls": [CALL]}))
    with sdk.chat.completions.stream(model="up:m", messages=[{"role": "user", "content": "w?"}],
                                     tools=[openai.pydantic_function_tool(City, name="get_weather")]) as s:
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.arguments == '{"city": "Paris"}' and call.function.parsed_arguments == City(city="Paris")


def test_parse_with_a_pydantic_model(served: Any, upstream: FakeLLMServer) -> None:
    _, sdk = served
    upstream.replier = lambda body: '{"name": "Ada", "age": 36}'
    r = sdk.chat.completions.parse(model="ponder/chain", messages=[{"role": "user", "content": "who?"}],
                                   response_format=Person)
    assert r.choices[0].message.parsed == Person(name="Ada", age=36)
    fmt = last_body(upstream)["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Person" and fmt["json_schema"]["strict"]


def test_n_choices_and_logprobs(served: Any, upstream: FakeLLMServer) -> None:
    live, sdk = served
    r = sdk.chat.completions.create(model="up:m", messages=[{"role": "user", "content": "hi there"}], n=3,
                                    logprobs=True)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [c.message.content for c in r.choices] == ["echo: hi there", "echo: hi there #1", "echo: hi there #2"]
    assert all(c.logprobs is not None and c.logprobs.content for c in r.choices)
    assert last_body(upstream)["n"] == 3
    seen: dict[int, str] = {}
    for chunk in sdk.chat.completions.create(model="up:m", messages=[{"role": "user", "content": "hi"}], n=2,
                                             stream=True):
        for ch in chunk.choices:
            seen[ch.index] = seen.get(ch.index, "") + (ch.delta.content or "")
    assert seen == {0: "echo: hi", 1: "echo: hi #1"}


def test_temperature_is_sent_only_when_the_client_sends_it(served: Any, upstream: FakeLLMServer) -> None:
    _, sdk = served
    sdk.chat.completions.create(model="up:m", messages=[{"role": "user", "content": "a"}])
    assert "temperature" not in last_body(upstream)
    sdk.chat.completions.create(model="up:m", messages=[{"role": "user", "content": "a"}], temperature=0.3)
    assert last_body(upstream)["temperature"] == 0.3


def test_max_completion_tokens_is_not_renamed(served: Any, upstream: FakeLLMServer) -> None:
    _, sdk = served
    sdk.chat.completions.create(model="up:m", messages=[{"role": "user", "content": "a"}], max_completion_tokens=9)
    body = last_body(upstream)
    assert body["max_completion_tokens"] == 9 and "max_tokens" not in body


def test_usage_details_and_refusal_field(served: Any) -> None:
    _, sdk = served
    r = sdk.chat.completions.create(model="up:m", messages=[{"role": "user", "content": "a"}])
    assert r.choices[0].message.refusal is None
    assert r.usage is not None and r.usage.prompt_tokens_details is not None
    assert r.usage.completion_tokens_details is not None


def test_a_wrong_key_is_openais_authentication_error(upstream: FakeLLMServer) -> None:
    client = Client(make_config({"up": upstream.url}), cache=False)
    with LiveServer(create_app(client, {}, models=["up:m"], api_key="right-key-123")) as live:
        r = httpx.post(live.url + "/v1/chat/completions", headers={"authorization": "Bearer wrong"},
                       json={"model": "up:m", "messages": [{"role": "user", "content": "a"}]})
    err = r.json()["error"]
    assert r.status_code == 401 and err["code"] == "invalid_api_key"
    assert err["message"].startswith("Incorrect API key provided") and "wrong" not in err["message"]


# --- the cache key covers the whole request -----------------------------------------------------------
def test_a_json_request_is_not_answered_from_a_plain_requests_cache(tmp_path: Path, upstream: FakeLLMServer) -> None:
    cfg = make_config({"up": upstream.url}, cache={"enabled": True, "path": str(tmp_path / "c")})
    with Client(cfg) as client:
        plain = client.complete("who?", model="up:m", temperature=0)
        upstream.replier = lambda body: '{"name": "Ada", "age": 36}' if body.get("response_format") else None
        as_json = client.complete("who?", model="up:m", temperature=0, response_format=PERSON_FORMAT)
        again = client.complete("who?", model="up:m", temperature=0, response_format=PERSON_FORMAT,
                                user="someone-else", metadata={"a": "b"})
        with_tools = client.complete("who?", model="up:m", temperature=0, tools=[WEATHER])
    assert not as_json.cached and json.loads(as_json.text) == {"name": "Ada", "age": 36}
    assert again.cached  # user and metadata cannot change the answer
    assert not with_tools.cached and plain.text == "echo: who?"


def test_a_request_without_temperature_is_not_cached(tmp_path: Path, upstream: FakeLLMServer) -> None:
    cfg = make_config({"up": upstream.url}, cache={"enabled": True, "path": str(tmp_path / "c")})
    with Client(cfg) as client:
        answers = [client.complete("q", model="up:m") for _ in range(2)]
    assert [a.cached for a in answers] == [False, False] and upstream.count == 2


# --- the Client carries the same ------------------------------------------------------------------
def test_the_client_sends_tools_and_returns_tool_calls(upstream: FakeLLMServer) -> None:
    upstream.queue(Action(message={"role": "assistant", "content": None, "tool_calls": [CALL]}))
    with Client(make_config({"up": upstream.url}), cache=False) as client:
        c = client.complete(HISTORY, model="up:m", tools=[WEATHER], tool_choice="required", user="u")
    body = last_body(upstream)
    assert body["tools"] == [WEATHER] and body["tool_choice"] == "required" and body["user"] == "u"
    assert body["messages"] == HISTORY
    assert c.tool_calls == (CALL,) and c.choices[0].content is None and c.finish_reason == "tool_calls"


def test_strategies_pass_the_whole_request(upstream: FakeLLMServer) -> None:
    upstream.queue(Action(message={"role": "assistant", "content": None, "tool_calls": [CALL]}))
    with Client(make_config({"up": upstream.url}), cache=False) as client:
        answer = SingleModel("up:m").run(ChatRequest.of(HISTORY, tools=[WEATHER]), client)
    assert answer.completion.tool_calls == (CALL,) and last_body(upstream)["messages"] == HISTORY


# --- Anthropic: translated, or refused by name ----------------------------------------------------------
def anthropic_client(upstream: FakeLLMServer) -> Client:
    from ponder import Config

    cfg = Config.model_validate({"providers": {"an": {"type": "anthropic", "base_url": upstream.base,
                                                      "api_key": "sk-ant-test", "max_retries": 0}},
                                 "cache": {"enabled": False}})
    return Client(cfg, cache=False)


def test_anthropic_gets_tools_tool_results_and_images_translated(upstream: FakeLLMServer) -> None:
    upstream.queue(Action(message={"role": "assistant", "content": "Let me check.", "tool_calls": [CALL]}))
    unnamed = [{k: v for k, v in m.items() if k != "name"} for m in HISTORY]
    with anthropic_client(upstream) as client:
        with pytest.raises(UnsupportedRequest) as named:
            client.complete(HISTORY, model="an:claude")
        assert named.value.param == "messages[1].name"
        c = client.complete(unnamed + [{"role": "tool", "tool_call_id": "call_2", "content": "more"}],
                            model="an:claude", tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
                            stop=["END"], max_completion_tokens=50)
    body = last_body(upstream)
    assert body["system"] == "Use tools."
    assert body["tools"] == [{"name": "get_weather", "description": "Weather in a city",
                              "input_schema": WEATHER["function"]["parameters"]}]  # type: ignore[index]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["stop_sequences"] == ["END"] and body["max_tokens"] == 50
    user, assistant, results = body["messages"]
    assert user["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                               "data": "iVBORw0KGgo="}}
    assert assistant == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]}
    assert results == {"role": "user", "content": [  # consecutive tool results: one user turn
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C and sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "more"}]}
    assert c.text == "Let me check." and c.finish_reason == "tool_use"
    assert c.choices[0].finish_reason == "tool_calls"
    assert c.tool_calls == ({"id": "call_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},)


def test_anthropic_answers_json_schema_through_a_forced_tool(upstream: FakeLLMServer) -> None:
    upstream.queue(Action(message={"role": "assistant", "content": None, "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "json_answer", "arguments": '{"name": "Ada", "age": 36}'}}]}))
    with anthropic_client(upstream) as client:
        c = client.complete("who?", model="an:claude", response_format=PERSON_FORMAT)
    body = last_body(upstream)
    assert body["tool_choice"] == {"type": "tool", "name": "json_answer"}
    assert json.loads(c.text) == {"name": "Ada", "age": 36} and not c.tool_calls


@pytest.mark.parametrize("field,value", [("logprobs", True), ("seed", 3), ("logit_bias", {"1": 2}),
                                         ("presence_penalty", 0.5)])
def test_anthropic_refuses_what_it_cannot_honour_by_name(upstream: FakeLLMServer, field: str, value: Any) -> None:
    with anthropic_client(upstream) as client, pytest.raises(UnsupportedRequest) as err:
        client.complete("q", model="an:claude", **{field: value})
    assert err.value.param == field and "an" in str(err.value) and upstream.count == 0


def test_the_server_answers_400_naming_a_field_no_model_can_serve(upstream: FakeLLMServer) -> None:
    with LiveServer(create_app(anthropic_client(upstream), {"chain": FallbackChain(["an:claude"])},
                               models=["an:claude"])) as live:
        sdk = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        for model in ("an:claude", "ponder/chain"):
            with pytest.raises(openai.BadRequestError) as err:
                sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "q"}], logprobs=True)
            assert err.value.body["param"] == "logprobs"  # type: ignore[index]
    assert upstream.count == 0


# --- capabilities: the model catalogue -------------------------------------------------------------
IMAGE_Q = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]


def test_a_strategy_skips_a_model_that_cannot_serve_the_request(upstream: FakeLLMServer,
                                                                upstream2: FakeLLMServer) -> None:
    cfg = make_config({"up": upstream.url, "up2": upstream2.url}, capabilities={"up:m": {"vision": False}})
    with Client(cfg, cache=False) as client:
        answer = FallbackChain(["up:m", "up2:m"]).run(ChatRequest.of(IMAGE_Q), client)
        text_only = FallbackChain(["up:m", "up2:m"]).run(ChatRequest.of("plain"), client)
    assert answer.completion.spec == "up2:m" and "no vision" in (answer.trace[0].error or "")
    assert upstream.count == 1 and text_only.completion.spec == "up:m"  # only the text request reached up


def test_the_catalogue_knows_public_models() -> None:
    from ponder._catalog import Catalog

    catalog = Catalog.default()
    with pytest.raises(UnsupportedRequest) as err:
        catalog.refuse("openai", "gpt-3.5-turbo-0125", ChatRequest.of(IMAGE_Q))
    assert err.value.param == "messages[0].content" and "vision" in str(err.value)
    with pytest.raises(UnsupportedRequest, match="logprobs"):
        catalog.refuse("openai", "gpt-5-mini", ChatRequest.of("q", logprobs=True))
    catalog.refuse("openai", "gpt-4o-mini-2024-07-18", ChatRequest.of(IMAGE_Q, tools=[WEATHER], logprobs=True))


def test_no_model_with_the_capability_is_a_400_naming_it(upstream: FakeLLMServer) -> None:
    cfg = make_config({"up": upstream.url}, capabilities={"up:m": {"tools": False}})
    with LiveServer(create_app(Client(cfg, cache=False), {"chain": FallbackChain(["up:m"])})) as live:
        sdk = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:
            sdk.chat.completions.create(model="ponder/chain", messages=[{"role": "user", "content": "q"}],
                                        tools=[WEATHER])
    assert err.value.body["param"] == "tools" and "no tools" in err.value.body["message"]  # type: ignore[index]
    assert upstream.count == 0
