import json

import pandas as pd
import pytest

import ponder
from ponder import ChatRequest, ProviderSettings
from ponder._pricing import PriceTable
from ponder.providers import build_provider


@pytest.fixture
def table_path(tmp_path):
    msgs = json.dumps([{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}])
    df = pd.DataFrame([
        {"query_id": "q1", "query": "capital of France?", "model": "small", "score": 1.0, "cost_usd": 0.001,
         "response": "Paris", "input_tokens": 5, "output_tokens": 1, "latency_s": 0.2},
        {"query_id": "q1", "query": "capital of France?", "model": "big", "score": 1.0, "cost_usd": 0.02,
         "response": "Paris.", "input_tokens": 5, "output_tokens": 2, "latency_s": 0.9},
        {"query_id": "q2", "query": msgs, "model": "small", "score": 0.0, "cost_usd": 0.002,
         "response": "5", "input_tokens": 9, "output_tokens": 1, "latency_s": 0.1},
    ])
    path = tmp_path / "outcomes.csv"
    df.to_csv(path, index=False)
    return path


def test_replay_answers_with_recorded_outcomes(table_path):
    p = build_provider("replay", ProviderSettings(path=str(table_path)), PriceTable.default())
    c = p.complete(ChatRequest.of("capital of France?", temperature=0), "big")
    assert (c.text, c.cost_usd, c.usage.output_tokens, c.provider) == ("Paris.", 0.02, 2, "replay")
    chat = ChatRequest.of([{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}])
    assert p.complete(chat, "small").text == "5"
    with pytest.raises(ponder.UnknownModel, match="has no model 'huge'"):
        p.complete(ChatRequest.of("capital of France?", temperature=0), "huge")
    with pytest.raises(ponder.BadResponse, match="no recorded answer"):
        p.complete(ChatRequest.of("unseen", temperature=0), "small")


def test_replay_through_client_and_cache(table_path, tmp_path):
    cfg = ponder.Config(providers={"replay": ProviderSettings(path=str(table_path))},
                        cache=ponder.CacheSettings(path=str(tmp_path / "c")))
    with ponder.Client(cfg) as client:
        first = client.complete("capital of France?", model="replay:small", temperature=0)
        again = client.complete("capital of France?", model="replay:small", temperature=0)
    assert first.cost_usd == 0.001 and again.cached and again.saved_usd == 0.001


def test_replay_answers_recorded_tool_calls(tmp_path):
    """A table collected with tools replays the calls, so a verifier cascade runs offline as live."""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    request = ChatRequest.of("weather in Paris?", tools=tools)
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    pd.DataFrame([{"query_id": "q1", "query": request.query, "model": "small", "score": 1.0, "cost_usd": 0.001,
                   "response": "", "tool_calls": json.dumps([call])}]).to_csv(tmp_path / "t.csv", index=False)
    p = build_provider("replay", ProviderSettings(path=str(tmp_path / "t.csv")), PriceTable.default())
    c = p.complete(request, "small")
    assert c.tool_calls == (call,) and c.finish_reason == "tool_calls"
    assert ponder.verify(request, c.choices[0]) is None
