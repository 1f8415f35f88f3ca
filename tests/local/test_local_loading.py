"""Hugging Face folders load into the compact decoder and give the same logits as transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ponder._exceptions import ModelFileError  # noqa: E402
from ponder.local._engine import Engine, make_drafter  # noqa: E402
from ponder.local._loading import _unpermute, load_model  # noqa: E402

BASE = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
CONFIGS = {
    "llama2": ("LlamaConfig", "LlamaForCausalLM", dict(rope_theta=10000.0)),
    "llama3-scaled-rope": ("LlamaConfig", "LlamaForCausalLM", dict(
        rope_theta=500000.0, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    "qwen2-bias": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_theta=1000000.0, tie_word_embeddings=True)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(rope_theta=10000.0, sliding_window=None)),
}


def _hf_model(kind: str, folder: Path):
    transformers = pytest.importorskip("transformers")
    cfg_cls, model_cls, extra = CONFIGS[kind]
    torch.manual_seed(0)
    config = getattr(transformers, cfg_cls)(**BASE, **extra)
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # move norms/biases off their constant init
    model.save_pretrained(folder, safe_serialization=True)
    return model


@pytest.mark.parametrize("kind", CONFIGS)
def test_hf_folder_logits_and_greedy_match_transformers(kind: str, tmp_path: Path) -> None:
    hf = _hf_model(kind, tmp_path)
    model, tokenizer = load_model(tmp_path)
    assert tokenizer is None  # no tokenizer.json in this folder
    assert model.args.qkv_bias == (kind == "qwen2-bias")
    ids = torch.tensor([[3, 17, 42, 8, 91, 3, 17, 5, 60, 2, 77, 13]])
    model.setup_caches(1, 64)
    ours = model(ids, 0)
    with torch.no_grad():
        theirs = hf(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    # Incremental decoding through the KV cache gives the same logits as one full pass.
    model.setup_caches(1, 64)
    step = torch.cat([model(ids[:, :7], 0), model(ids[:, 7:8], 7), model(ids[:, 8:], 8)], dim=1)
    assert torch.allclose(step, theirs, atol=1e-4)
    # Greedy generation: HF's generate, ponder target-only and ponder self-speculative agree.
    with torch.no_grad():
        hf_out = hf.generate(ids, max_new_tokens=20, do_sample=False, min_new_tokens=20,
                             pad_token_id=0, eos_token_id=None)[0, ids.shape[1]:].tolist()
    plain, _, _ = Engine(model).generate_ids(ids[0].tolist(), 20, stop_ids=())
    spec, _, _ = Engine(model, drafter=make_drafter("layers:1", model), k=3).generate_ids(ids[0].tolist(), 20, stop_ids=())
    assert plain == hf_out and spec == hf_out


def test_unpermute_inverts_llama_cpp_permutation() -> None:
    import numpy as np

    def permute(w: np.ndarray, n_head: int) -> np.ndarray:  # llama.cpp convert_hf_to_gguf.py
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)
    assert np.array_equal(_unpermute(permute(w, 8), 8), w)
    assert not np.array_equal(permute(w, 8), w)


def test_broken_model_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such model"):
        load_model(tmp_path / "missing.gguf")
    with pytest.raises(ModelFileError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelFileError, match="unsupported model_type"):
        load_model(tmp_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF but not really")
    with pytest.raises(ModelFileError, match="not a readable GGUF"):
        load_model(bad)
