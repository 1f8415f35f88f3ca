import sys

import pytest
from pydantic import ValidationError

import ponder
from ponder import ChatRequest, Completion, ModelSpec, Price, PriceTable, Usage
from ponder._pricing import estimate_tokens, price_completion


def test_import_does_not_pull_heavy_frameworks():
    import subprocess

    code = "import ponder, sys; bad=[m for m in ('torch','triton','transformers') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_spec_parsing():
    s = ModelSpec.parse("anthropic:claude-3-5-haiku-latest")
    assert (s.provider, s.model) == ("anthropic", "claude-3-5-haiku-latest")
    assert str(ModelSpec.parse("local:/models/x.gguf")) == "local:/models/x.gguf"
    assert ModelSpec.parse("OpenAI:gpt-4o:ft:abc").model == "gpt-4o:ft:abc"
    with pytest.raises(ponder.UnknownProvider, match="provider:model"):
        ModelSpec.parse("gpt-4o")


def test_chat_request_from_prompt_and_messages():
    r = ChatRequest.of("hi")
    assert r.messages[0].role == "user" and r.prompt_text == "hi"
    r2 = ChatRequest.of('[{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]')
    assert [m.role for m in r2.messages] == ["system", "user"] and r2.prompt_text == "q"
    assert r.sampling() == {}  # nothing the caller did not set (no default temperature)


def test_price_cost_counts_cached_input_at_its_rate():
    p = Price(input=2.0, output=8.0, cached_input=0.5, per_request=0.001)
    u = Usage(input_tokens=1_000_000, output_tokens=500_000, cached_input_tokens=400_000)
    # 600k fresh * 2 + 400k cached * 0.5 + 500k * 8, per 1M, plus the fee
    assert p.cost(u) == pytest.approx(1.2 + 0.2 + 4.0 + 0.001)


def test_price_table_matches_versioned_names_by_longest_prefix():
    t = PriceTable.default()
    assert t.lookup("openai", "gpt-4o-mini-2024-07-18") == t.lookup("openai", "gpt-4o-mini")
    assert t.lookup("openai", "gpt-4o-2024-08-06") == t.lookup("openai", "gpt-4o")
    assert t.lookup("openai", "gpt-4o-mini") != t.lookup("openai", "gpt-4o")
    assert t.lookup("anthropic", "claude-3-5-haiku-latest") is not None
    assert t.lookup("openai", "my-local-model") is None
    assert t.as_of and all(p.source for _, p in t.rows())


def test_overrides_replace_and_add_rows():
    t = PriceTable.default().with_overrides({"openai:gpt-4o-mini": Price(input=1, output=2),
                                              "openai:my-model": Price(input=3, output=4)})
    assert t.lookup("openai", "gpt-4o-mini").input == 1
    assert t.lookup("openai", "my-model-v2").output == 4


def test_missing_usage_is_estimated_and_flagged():
    t = PriceTable.default()
    c = price_completion(t, provider="openai", model="gpt-4o", usage=None,
                         prompt_text="x" * 400, text="y" * 40)
    assert c.cost_estimated
    assert c.usage.input_tokens == estimate_tokens("x" * 400) == 100
    assert c.cost_usd == pytest.approx((100 * 2.5 + 10 * 10.0) / 1e6)
    exact = price_completion(t, provider="openai", model="gpt-4o", usage=Usage(input_tokens=10),
                             prompt_text="", text="")
    assert not exact.cost_estimated


def test_completion_is_a_value():
    c = Completion(text="a", model="m", provider="p", cost_usd=0.1)
    with pytest.raises(ValidationError):
        c.cost_usd = 0.2  # frozen: cost is returned, never mutated state
    assert c.spec == "p:m"
