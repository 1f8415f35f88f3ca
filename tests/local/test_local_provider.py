"""The ``local:`` provider through ponder.Client (config → registry → LocalProvider) and a cascade."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ponder import Client  # noqa: E402
from ponder._config import Config  # noqa: E402
from ponder._exceptions import UnknownModel  # noqa: E402
from ponder._types import ChatRequest  # noqa: E402
from ponder.local._provider import LocalProvider  # noqa: E402


@pytest.fixture(scope="module")
def client(smollm_gguf):
    # The torch runtime: its float32 arithmetic on the dequantised weights answers as transformers
    # does. llama.cpp (the CPU default) quantises activations to 8 bits and answers some of these
    # prompts differently; tests/local/test_cpu_path.py covers it.
    config = Config.model_validate(
        {"providers": {"local": {"type": "local", "path": str(smollm_gguf), "draft": "ngram",
                                "options": {"k": 3, "runtime": "torch"}}}}
    )
    with Client(config, cache=False) as c:
        yield c


@pytest.mark.slow
def test_client_completes_with_the_local_model(client) -> None:
    comp = client.complete("What is the capital of France?", model="local:smollm2")
    assert "Paris" in comp.text
    assert comp.provider == "local" and comp.model == "smollm2"
    assert comp.cost_usd == 0.0 and not comp.cost_estimated
    assert comp.usage.input_tokens > 20 and 0 < comp.usage.output_tokens < 256
    assert comp.finish_reason == "stop"


@pytest.mark.slow
async def test_async_honours_max_tokens_and_greedy_is_deterministic(client) -> None:
    req = ChatRequest.of("Write a long story about a dragon.", temperature=0.0, max_tokens=7)
    a = await client.acomplete(req, model="local:smollm2")
    b = client.complete(req, model="local:smollm2")
    assert a.usage.output_tokens == 7 and a.finish_reason == "length"
    assert a.text == b.text


@pytest.mark.slow
def test_sampling_parameters_and_stop_strings(client) -> None:
    req = ChatRequest.of("Count from 1 to 10, separated by commas.", temperature=0.8, top_p=0.9,
                         seed=5, max_tokens=30)
    a = client.complete(req, model="local:smollm2")
    assert a.text == client.complete(req, model="local:smollm2").text  # seeded
    greedy = client.complete(ChatRequest.of("Count from 1 to 10, separated by commas.", max_tokens=30),
                             model="local:smollm2")
    cut = client.complete(ChatRequest.of("Count from 1 to 10, separated by commas.", max_tokens=30,
                                         stop=("5",)), model="local:smollm2")
    assert "5" in greedy.text and cut.text == greedy.text[: greedy.text.index("5")]
    assert cut.finish_reason == "stop"


def test_a_cascade_whose_first_rung_is_local_runs_end_to_end(client) -> None:
    from ponder.cascade._cascade import Cascade, Rung

    cascade = Cascade([Rung("smollm2", spec="local:smollm2")])
    answer = cascade.run("What is the capital of France?", client)
    assert "Paris" in answer.completion.text
    assert answer.trace[0].model == "local:smollm2" and answer.trace[0].accepted
    assert answer.cost_usd == 0.0


def test_configured_price_is_charged_and_unknown_names_are_clear(client, monkeypatch) -> None:
    from ponder._pricing import Price, PriceTable

    provider = client.provider("local")
    assert isinstance(provider, LocalProvider)
    monkeypatch.setattr(provider, "prices", PriceTable({"local:smollm2": Price(input=1.0, output=2.0)}))
    comp = provider.complete(ChatRequest.of("Say hi.", max_tokens=5), "smollm2")
    expected = (comp.usage.input_tokens * 1.0 + comp.usage.output_tokens * 2.0) / 1e6
    assert comp.cost_usd == pytest.approx(expected) and comp.cost_usd > 0
    with pytest.raises(UnknownModel, match="not a file or folder"):
        LocalProvider(None).complete(ChatRequest.of("hi"), "no-such-model")
