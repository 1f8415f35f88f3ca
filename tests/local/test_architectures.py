"""Each supported architecture, as a tiny GGUF and as a Hugging Face folder, gives transformers' logits.

The GGUFs are written here the way llama.cpp's ``convert_hf_to_gguf.py`` writes them (Llama/Mistral
Q/K rows permuted, Gemma norms stored as 1 + w, Llama 3.1 RoPE as a ``rope_freqs`` tensor); that
transformers' own GGUF reader recovers the original weights from them checks the writer.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from ponder._exceptions import ModelFileError  # noqa: E402
from ponder.local._engine import Engine, make_drafter  # noqa: E402
from ponder.local._loading import load_model  # noqa: E402

BASE = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16}
# name: (config class, model class, GGUF architecture, config extras)
ARCHS = {
    "llama2": ("LlamaConfig", "LlamaForCausalLM", "llama", dict(rope_theta=10000.0)),
    "llama3.1": ("LlamaConfig", "LlamaForCausalLM", "llama",
                 dict(rope_theta=500000.0, tie_word_embeddings=True, rope_scaling=LLAMA31_ROPE)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", "qwen2", dict(rope_theta=1000000.0, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", "qwen3", dict(head_dim=32, rope_theta=1000000.0)),
    "mistral": ("MistralConfig", "MistralForCausalLM", "llama", dict(rope_theta=10000.0, sliding_window=None)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", "gemma3",
               dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=4)),
}
# Longer than Gemma's window of 4, so the sliding layers really cut.
IDS = [3, 17, 42, 8, 91, 3, 17, 5, 60, 2, 77, 13]


def _hf_model(kind: str):
    cfg_cls, model_cls, _, extra = ARCHS[kind]
    torch.manual_seed(0)
    config = getattr(transformers, cfg_cls)(**BASE, **extra)
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # move norms/biases off their constant init
    return model


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:  # convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama3_rope_factors(theta: float, head_dim: int, s: dict) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors: one factor per frequency."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wavelen = s["original_max_position_embeddings"] / s["low_freq_factor"]
    high_wavelen = s["original_max_position_embeddings"] / s["high_freq_factor"]
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(s["factor"])
        else:
            smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / (
                s["high_freq_factor"] - s["low_freq_factor"])
            factors.append(1 / ((1 - smooth) / s["factor"] + smooth))
    return np.array(factors, dtype=np.float32)


def write_gguf(model, arch: str, path: Path, *, rope_freqs: bool = True, strings: dict | None = None) -> Path:
    """A float32 GGUF of a transformers model, laid out as llama.cpp's converter lays it out."""
    cfg = model.config
    rope = cfg.rope_parameters.get("full_attention", cfg.rope_parameters)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in (("block_count", cfg.num_hidden_layers), ("context_length", cfg.max_position_embeddings),
                       ("embedding_length", cfg.hidden_size), ("feed_forward_length", cfg.intermediate_size),
                       ("attention.head_count", cfg.num_attention_heads),
                       ("attention.head_count_kv", cfg.num_key_value_heads),
                       ("attention.key_length", head_dim), ("attention.value_length", head_dim)):
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
    w.add_float32(f"{arch}.rope.freq_base", rope["rope_theta"])
    if arch == "gemma3":
        w.add_uint32("gemma3.attention.sliding_window", cfg.sliding_window)
    for key, value in (strings or {}).items():
        w.add_string(key, value)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    block = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
             "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "pre_feedforward_layernorm": "ffn_norm",
             "post_attention_layernorm": "post_attention_norm" if arch == "gemma3" else "ffn_norm",
             "post_feedforward_layernorm": "post_ffw_norm"}
    tied = cfg.tie_word_embeddings
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue
        data = t.float().numpy().copy()
        if name in names:
            out = names[name]
        else:
            _, _, i, rest = name.split(".", 3)
            part, suffix = rest.rsplit(".", 1)
            out = f"blk.{i}.{block[part]}.{suffix}"
        if arch == "llama" and ".attn_q." in out:
            data = _permute(data, cfg.num_attention_heads)
        elif arch == "llama" and ".attn_k." in out:
            data = _permute(data, cfg.num_key_value_heads)
        if arch == "gemma3" and out.endswith("norm.weight"):
            data = data + 1.0
        w.add_tensor(out, data)
    if rope.get("rope_type") == "llama3" and rope_freqs:
        w.add_tensor("rope_freqs.weight", _llama3_rope_factors(rope["rope_theta"], head_dim, rope))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _check_against(model, hf, ids: list[int]) -> None:
    x = torch.tensor([ids])
    model.setup_caches(1, 64)
    ours = model(x, 0)
    with torch.no_grad():
        theirs = hf(x).logits
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    # Incremental decoding through the KV cache (across the sliding window) gives the same logits.
    model.setup_caches(1, 64)
    step = torch.cat([model(x[:, :7], 0), model(x[:, 7:8], 7), model(x[:, 8:], 8)], dim=1)
    assert torch.allclose(step, theirs, atol=1e-4)
    # Greedy: transformers, ponder target-only and ponder self-speculative agree.
    with torch.no_grad():
        want = hf.generate(x, max_new_tokens=16, do_sample=False, min_new_tokens=16,
                           pad_token_id=0, eos_token_id=None)[0, len(ids):].tolist()
    plain, _, _ = Engine(model).generate_ids(ids, 16, stop_ids=())
    spec, _, _ = Engine(model, drafter=make_drafter("layers:2", model), k=3).generate_ids(ids, 16, stop_ids=())
    assert plain == want and spec == want


@pytest.mark.parametrize("kind", ARCHS)
def test_tiny_gguf_matches_transformers(kind: str, tmp_path: Path) -> None:
    hf = _hf_model(kind)
    path = write_gguf(hf, ARCHS[kind][2], tmp_path / f"{kind}.gguf")
    model, tok = load_model(path)
    assert tok is None  # no tokenizer metadata in this file
    assert model.args.qk_norm == (kind in ("qwen3", "gemma3"))
    assert bool(model.args.sliding_layers) == (kind == "gemma3")
    _check_against(model, hf, IDS)


@pytest.mark.parametrize("kind", ["llama2", "qwen3", "gemma3"])
def test_transformers_reads_the_tiny_gguf_back_to_the_same_weights(kind: str, tmp_path: Path) -> None:
    """The writer above lays tensors out as transformers' GGUF reader (after llama.cpp) expects."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    hf = _hf_model(kind)
    path = write_gguf(hf, ARCHS[kind][2], tmp_path / f"{kind}.gguf")
    fresh = getattr(transformers, ARCHS[kind][1])(hf.config).eval()
    back = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=fresh)["tensors"]
    want = hf.state_dict()
    assert back.keys() <= want.keys() and len(back) >= len(want) - 1
    for name, tensor in back.items():
        assert torch.allclose(tensor.float(), want[name], atol=1e-6), name


def test_llama31_rope_freqs_are_applied(tmp_path: Path) -> None:
    """A Llama 3.1 GGUF carries its RoPE scaling only as rope_freqs: dropping it changes the logits."""
    hf = _hf_model("llama3.1")
    with_freqs, _ = load_model(write_gguf(hf, "llama", tmp_path / "a.gguf"))
    without, _ = load_model(write_gguf(hf, "llama", tmp_path / "b.gguf", rope_freqs=False))
    assert with_freqs.args.rope_factors is not None and max(with_freqs.args.rope_factors) == 8.0
    assert without.args.rope_factors is None
    x = torch.tensor([IDS])
    for m in (with_freqs, without):
        m.setup_caches(1, 64)
    with torch.no_grad():
        theirs = hf(x).logits
    assert torch.allclose(with_freqs(x, 0), theirs, atol=1e-4)
    assert (without(x, 0) - theirs).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["qwen3", "gemma3"])
def test_hf_folder_matches_transformers(kind: str, tmp_path: Path) -> None:
    hf = _hf_model(kind)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model, _ = load_model(tmp_path)
    _check_against(model, hf, IDS)


def test_bf16_load_stays_close_to_float32(tmp_path: Path) -> None:
    hf = _hf_model("gemma3")
    path = write_gguf(hf, "gemma3", tmp_path / "g.gguf")
    full, _ = load_model(path)
    half, _ = load_model(path, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in half.parameters())
    x = torch.tensor([IDS])
    for m in (full, half):
        m.setup_caches(1, 64)
    assert (full(x, 0) - half(x, 0)).abs().max() < 0.1


def test_unsupported_gguf_features_are_clear_errors(tmp_path: Path) -> None:
    hf = _hf_model("llama2")
    path = write_gguf(hf, "llama", tmp_path / "ok.gguf")
    raw = path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(raw[: len(raw) - 4096])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(tmp_path / "cut.gguf")
    (tmp_path / "head.gguf").write_bytes(raw[:200])
    with pytest.raises(ModelFileError, match="not a readable GGUF"):
        load_model(tmp_path / "head.gguf")
    write_gguf(hf, "llama", tmp_path / "yarn.gguf", strings={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(ModelFileError, match="RoPE scaling 'yarn'"):
        load_model(tmp_path / "yarn.gguf")
    write_gguf(hf, "falcon", tmp_path / "falcon.gguf")
    with pytest.raises(ModelFileError, match="unsupported architecture 'falcon'"):
        load_model(tmp_path / "falcon.gguf")
