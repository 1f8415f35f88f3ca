"""Hard verifiers: an answer that breaks the request's contract (JSON, schema, tools, tool_choice,
empty, refusal) escalates whatever a scorer says, and the verifier-only cascade (no training)
is a valid, served strategy file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from ponder import ChatRequest, Choice, Client, load_strategy
from ponder._verify import CHECKS, verify
from ponder.server import create_app
from tests.fakeserver import Action, FakeLLMServer
from tests.server._serverkit import LiveServer, make_config

WEATHER = {"type": "function", "function": {"name": "get_weather", "strict": True, "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PERSON = {"type": "json_schema", "json_schema": {"name": "Person", "strict": True, "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"]}}}
VERIFY_FILE = {"format": "ponder-strategy", "version": 1, "kind": "cascade", "name": "verify",
               "rungs": [{"model": "cheap:m"}, {"model": "dear:m"}]}


def call(arguments: str, name: str = "get_weather") -> Choice:
    return Choice(content=None, tool_calls=({"id": "c", "type": "function",
                                             "function": {"name": name, "arguments": arguments}},))


@pytest.mark.parametrize("request_kw,answer,failed", [
    ({}, Choice(content="fine"), None),
    ({}, Choice(content="  "), "empty"),
    ({}, Choice(content="", refusal="I can't"), "refusal"),
    ({"response_format": {"type": "json_object"}}, Choice(content='{"a": 1}'), None),
    ({"response_format": {"type": "json_object"}}, Choice(content='{"a": 1'), "json"),
    ({"response_format": {"type": "json_object"}}, Choice(content="[1, 2]"), "json"),
    ({"response_format": PERSON}, Choice(content='{"name": "Ada", "age": 36}'), None),
    ({"response_format": PERSON}, Choice(content='{"name": "Ada", "age": "old"}'), "json_schema"),
    ({"response_format": PERSON}, Choice(content='{"name": "Ada", "age": 1, "x": 2}'), "json_schema"),
    ({"tools": [WEATHER]}, call('{"city": "Paris"}'), None),
    ({"tools": [WEATHER]}, call('{"city": 3}'), "tool_schema"),
    ({"tools": [WEATHER]}, call('{"city": "P", "extra": 1}'), "tool_schema"),  # strict
    ({"tools": [WEATHER]}, call('{"city": '), "tool_arguments"),
    ({"tools": [WEATHER]}, call("{}", name="launch"), "tool_name"),
    ({"tools": [WEATHER], "tool_choice": "required"}, Choice(content="sunny"), "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "none"}, call('{"city": "P"}'), "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
     call('{"city": "P"}'), "tool_choice"),
])
def test_each_verifier(request_kw: dict[str, Any], answer: Choice, failed: str | None) -> None:
    problem = verify(ChatRequest.of("q", **request_kw), answer)
    assert (problem.split(":")[0] if problem else None) == failed
    assert failed is None or failed in CHECKS


def test_a_refusal_is_the_answer_on_the_last_rung() -> None:
    assert verify(ChatRequest.of("q"), Choice(content="no", refusal="no"), final=True) is None


@pytest.fixture
def cheap() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def dear() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def verifier(tmp_path: Path) -> Path:
    path = tmp_path / "verify.json"
    path.write_text(json.dumps(VERIFY_FILE))
    return path


def test_the_verifier_cascade_escalates_broken_json_and_accepts_valid_json(
        cheap: FakeLLMServer, dear: FakeLLMServer, verifier: Path) -> None:
    strategy = load_strategy(verifier)
    cheap.queue(Action(text='{"name": "Ada", "age": '), Action(text='{"name": "Ada", "age": 36}'))
    dear.queue(Action(text='{"name": "Ada", "age": 36}'))
    with Client(make_config({"cheap": cheap.url, "dear": dear.url}), cache=False) as client:
        broken = strategy.run(ChatRequest.of("who?", response_format=PERSON), client)
        valid = strategy.run(ChatRequest.of("who?", response_format=PERSON), client)
    assert [a.model for a in broken.trace] == ["cheap:m", "dear:m"]
    assert broken.trace[0].check.startswith("json:") and not broken.trace[0].accepted  # type: ignore[union-attr]
    assert broken.completion.spec == "dear:m" and broken.trace[1].accepted
    assert [a.model for a in valid.trace] == ["cheap:m"] and valid.trace[0].check is None
    assert (cheap.count, dear.count) == (2, 1)


def test_the_verifier_cascade_escalates_a_tool_call_with_invalid_arguments_when_served(
        cheap: FakeLLMServer, dear: FakeLLMServer, verifier: Path) -> None:
    bad = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"town": "Paris"}'}}]}
    good = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    cheap.queue(Action(message=bad), Action(message=good), Action(message=good))
    dear.queue(Action(message=good))
    client = Client(make_config({"cheap": cheap.url, "dear": dear.url}), cache=False)
    with LiveServer(create_app(client, {"verify": verifier})) as live:
        sdk = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        ask = dict(model="ponder/verify", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER])
        escalated = sdk.chat.completions.create(**ask)  # type: ignore[call-overload]
        accepted = sdk.chat.completions.create(**ask)  # type: ignore[call-overload]
        chunks = list(sdk.chat.completions.create(stream=True, **ask))  # type: ignore[call-overload]
    assert escalated.choices[0].message.tool_calls[0].id == "c2"
    trace = escalated.model_extra["ponder"]["trace"]  # type: ignore[index]
    assert trace[0]["check"].startswith("tool_schema:") and trace[1]["accepted"]
    assert accepted.choices[0].message.tool_calls[0].id == "c2"
    assert len(accepted.model_extra["ponder"]["trace"]) == 1  # type: ignore[index]
    streamed = [tc for c in chunks for ch in c.choices for tc in ch.delta.tool_calls or []]
    assert streamed[0].function.name == "get_weather" and chunks[-1].choices[0].finish_reason == "tool_calls"


def test_when_no_rung_passes_the_last_answer_is_returned_with_its_check(
        cheap: FakeLLMServer, dear: FakeLLMServer, verifier: Path) -> None:
    cheap.queue(Action(text="not json"))
    dear.queue(Action(text="still not json"))
    with Client(make_config({"cheap": cheap.url, "dear": dear.url}), cache=False) as client:
        answer = load_strategy(verifier).run(ChatRequest.of("q", response_format={"type": "json_object"}), client)
    assert answer.completion.text == "still not json"
    assert [a.check.split(":")[0] for a in answer.trace if a.check] == ["json", "json"]


def test_replay_runs_the_verifiers_on_recorded_answers(verifier: Path) -> None:
    """Offline replay decides as the live loop does: a recorded answer that breaks the row's
    response_format escalates (a table from ``ponder collect`` records the format)."""
    import pandas as pd

    from ponder.evaluation import read_outcomes

    fmt = json.dumps({"type": "json_object"})
    rows = [("q1", "cheap:m", "not json", 0.0, 0.001), ("q1", "dear:m", '{"a": 1}', 1.0, 0.01),
            ("q2", "cheap:m", '{"b": 2}', 1.0, 0.001), ("q2", "dear:m", '{"b": 2}', 1.0, 0.01)]
    df = pd.DataFrame([{"query_id": q, "query": q, "model": m, "response": r, "score": s, "cost_usd": c,
                        "response_format": fmt} for q, m, r, s, c in rows])
    cost, quality, rung = load_strategy(verifier).replay(read_outcomes(df))
    assert list(rung) == [1, 0] and list(quality) == [1.0, 1.0]
    assert cost.tolist() == pytest.approx([0.011, 0.001])
