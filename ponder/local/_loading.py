"""Load a checkpoint: a Hugging Face folder (config.json + safetensors + tokenizer.json) or a GGUF.

Loading streams. The decoder is built on the meta device, given uninitialised storage in the
target dtype on the target device, then filled one source tensor at a time, large tensors a block
of rows at a time: each block is read, converted once (dequantised, un-permuted, cast) and copied
straight into its place, q/k/v and gate/up into their slices of the fused weights. No state dict
is ever held, so host memory peaks at the model (when it lives on the host) plus one block.

Both formats name tensors the Hugging Face way (``_gguf_tensors`` renames llama.cpp's), so one
table (``_targets``) maps them onto the decoder. llama.cpp stores Llama Q/K rows permuted for its
interleaved RoPE and Gemma's norms as (1 + w); both are undone per block, so one RoPE and one
norm serve both formats.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from math import prod
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .._exceptions import ModelFileError
from ._model import ModelArgs, Transformer
from ._tokenizer import Tokenizer

__all__ = ["load_model", "read_gguf", "export_hf_folder"]

_SUPPORTED = ("llama", "qwen2", "qwen3", "mistral", "smollm", "smollm2", "gemma3", "gemma3_text")
_BLOCK_ELEMENTS = 1 << 20  # rows per block: about 1M elements (4 MB as float32)

# One source tensor: (Hugging Face name, shape, read(first_row, end_row) -> those rows as a tensor).
Reader = Callable[[int, int], torch.Tensor]
Source = Iterator[tuple[str, tuple[int, ...], Reader]]


# ---------------------------------------------------------------------------- the decoder's side


def _targets(a: ModelArgs) -> dict[str, tuple[str, int, int]]:
    """Hugging Face tensor name (no ``model.`` prefix) -> (our parameter, first row, rows)."""
    H, Hkv, D, inter = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim, a.head_dim, a.intermediate_size
    t = {"embed_tokens.weight": ("tok_embeddings.weight", 0, a.vocab_size), "norm.weight": ("norm.weight", 0, a.dim)}
    if not a.tie_embeddings:
        t["lm_head.weight"] = ("output.weight", 0, a.vocab_size)
    for i in range(a.n_layers):
        p = f"layers.{i}."  # the same prefix on both sides
        norms = {"input_layernorm": "attention_norm"}
        if a.gemma:
            norms |= {"pre_feedforward_layernorm": "ffn_norm", "post_attention_layernorm": "post_attention_norm",
                      "post_feedforward_layernorm": "post_ffn_norm"}
        else:
            norms["post_attention_layernorm"] = "ffn_norm"
        for src, dst in norms.items():
            t[f"{p}{src}.weight"] = (f"{p}{dst}.weight", 0, a.dim)
        parts = ("weight", "bias") if a.qkv_bias else ("weight",)
        for part in parts:  # q, k, v stacked in one fused weight
            for x, off, rows in (("q", 0, H), ("k", H, Hkv), ("v", H + Hkv, Hkv)):
                t[f"{p}self_attn.{x}_proj.{part}"] = (f"{p}attention.wqkv.{part}", off, rows)
        if a.qk_norm:
            t[f"{p}self_attn.q_norm.weight"] = (f"{p}attention.q_norm.weight", 0, D)
            t[f"{p}self_attn.k_norm.weight"] = (f"{p}attention.k_norm.weight", 0, D)
        t[f"{p}self_attn.o_proj.weight"] = (f"{p}attention.wo.weight", 0, a.dim)
        t[f"{p}mlp.gate_proj.weight"] = (f"{p}feed_forward.w13.weight", 0, inter)
        t[f"{p}mlp.up_proj.weight"] = (f"{p}feed_forward.w13.weight", inter, inter)
        t[f"{p}mlp.down_proj.weight"] = (f"{p}feed_forward.w2.weight", 0, a.dim)
    return t


def _empty_model(args: ModelArgs, dtype: torch.dtype, device: str) -> Transformer:
    """The decoder with uninitialised weights of ``dtype`` on ``device`` (no host copy for CUDA)."""
    with torch.device("meta"):
        model = Transformer(args).to(dtype)
    model = model.to_empty(device=device)
    if args.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    return model


def _fill(model: Transformer, source: Source, path: str) -> None:
    """Copy each source tensor, a block of rows at a time, into its (slice of a) parameter."""
    targets = _targets(model.args)
    params = dict(model.named_parameters())
    done: set[str] = set()
    for name, shape, read in source:
        key = name.removeprefix("model.")
        if key not in targets:
            continue  # e.g. a tied lm_head, rotary inv_freq buffers
        pname, first, rows = targets[key]
        param = params[pname]
        if (rows, *param.shape[1:]) != tuple(shape):
            raise ModelFileError(f"tensor {name!r} has shape {tuple(shape)}, expected {(rows, *param.shape[1:])}", path=path)
        step = max(1, _BLOCK_ELEMENTS // max(1, prod(shape[1:])))
        step = max(model.args.head_dim, step - step % model.args.head_dim)  # whole heads per block
        with torch.no_grad():
            for r in range(0, rows, step):
                end = min(rows, r + step)
                param[first + r : first + end].copy_(read(r, end))
        done.add(key)
    missing = sorted(set(targets) - done)
    if missing:
        raise ModelFileError(f"missing tensor {missing[0]!r} ({len(missing)} missing in all)", path=path)


# ---------------------------------------------------------------------------- GGUF


_GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GGUF_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",  # Gemma: pre_feedforward_layernorm
    "post_attention_norm": "post_attention_layernorm",  # Gemma only
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_REQUIRED = ("embedding_length", "block_count", "attention.head_count", "feed_forward_length")
_GGUF_MODEL_TYPE = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3_text"}


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved -> rotate-half RoPE layout)."""
    rows = w.shape[0]
    out: np.ndarray = w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    return out


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class GgufTensor(NamedTuple):
    name: str
    shape: tuple[int, ...]  # torch order: rows first
    qtype: int  # ggml type id
    offset: int  # from the start of the file


def _read_gguf_header(path: str) -> tuple[dict[str, Any], dict[str, GgufTensor]]:
    """A GGUF's metadata (key -> value; numeric arrays as numpy) and tensor table.

    A small reader of its own: gguf-py's ``GGUFReader`` builds a Python object per vocabulary
    entry, which costs 700 MB and 50 s on Gemma's 262k-token vocabulary.
    """
    import struct

    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as f:

        def take(n: int) -> bytes:
            data = f.read(n)
            if len(data) != n:
                raise ValueError("the file ends inside its header")
            return data

        def scalar(fmt: str) -> Any:
            return struct.unpack(fmt, take(struct.calcsize(fmt)))[0]

        def string() -> str:
            return take(scalar("<Q")).decode("utf-8", errors="replace")

        def value(kind: int) -> Any:
            if kind == 8:
                return string()
            if kind == 9:
                inner, n = scalar("<I"), scalar("<Q")
                if inner in _GGUF_SCALARS:
                    dt = np.dtype(_GGUF_SCALARS[inner])
                    return np.frombuffer(take(n * dt.itemsize), dtype=dt)
                return [value(inner) for _ in range(n)]
            if kind not in _GGUF_SCALARS:
                raise ValueError(f"unknown metadata value type {kind}")
            return scalar(_GGUF_SCALARS[kind])

        if take(4) != b"GGUF":
            raise ValueError("no GGUF magic number")
        version = scalar("<I")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        n_tensors, n_kv = scalar("<Q"), scalar("<Q")
        meta = {}
        for _ in range(n_kv):
            key = string()
            meta[key] = value(scalar("<I"))
        table = []
        for _ in range(n_tensors):
            name = string()
            dims = [scalar("<Q") for _ in range(scalar("<I"))]
            table.append((name, tuple(reversed(dims)), scalar("<I"), scalar("<Q")))
        align = int(meta.get("general.alignment", 32))
        start = -(-f.tell() // align) * align
    tensors = {}
    for name, shape, qtype, offset in table:
        if GGMLQuantizationType(qtype) not in GGML_QUANT_SIZES:  # a ValueError for an unknown type id
            raise ValueError(f"tensor {name!r} has ggml type {qtype} of unknown size")
        tensors[name] = GgufTensor(name, shape, qtype, start + offset)
    return meta, tensors


def _open_gguf(path: str) -> tuple[dict[str, Any], dict[str, GgufTensor]]:
    try:
        return _read_gguf_header(path)
    except (ValueError, KeyError, OSError, UnicodeDecodeError, MemoryError) as exc:
        raise ModelFileError(f"not a readable GGUF file: {exc}", path=path) from exc


def _gguf_config(fields: dict[str, Any], tensors: dict[str, GgufTensor], path: str) -> dict[str, Any]:
    """The GGUF's metadata as a Hugging Face ``config.json`` dict (``ModelArgs.from_hf_config`` reads it)."""

    def meta(key: str, default: Any = None) -> Any:
        value = fields.get(key, default)
        if value is None and default is None and key.endswith(_REQUIRED):
            raise ModelFileError(f"missing metadata key {key!r}", path=path)
        return value

    arch = meta("general.architecture")
    if arch not in _GGUF_MODEL_TYPE:
        raise ModelFileError(f"unsupported architecture {arch!r}; supported: {', '.join(_GGUF_MODEL_TYPE)}", path=path)
    if "token_embd.weight" not in tensors:
        raise ModelFileError("missing tensor 'token_embd.weight'", path=path)
    n_heads, n_layers = int(meta(f"{arch}.attention.head_count")), int(meta(f"{arch}.block_count"))
    config: dict[str, Any] = {
        "model_type": _GGUF_MODEL_TYPE[arch],
        "vocab_size": int(tensors["token_embd.weight"].shape[0]),
        "hidden_size": int(meta(f"{arch}.embedding_length")),
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(meta(f"{arch}.attention.head_count_kv", n_heads)),
        "intermediate_size": int(meta(f"{arch}.feed_forward_length")),
        "rms_norm_eps": float(meta(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta(f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta(f"{arch}.context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "torch_dtype": "float32",
    }
    key_len = meta(f"{arch}.attention.key_length")
    if key_len is not None:
        config["head_dim"] = int(key_len)
    scaling = meta(f"{arch}.rope.scaling.type", "none")
    if scaling == "linear":
        config["rope_scaling"] = {"rope_type": "linear", "factor": float(meta(f"{arch}.rope.scaling.factor"))}
    elif scaling != "none":
        raise ModelFileError(f"RoPE scaling {scaling!r} is not supported (none, linear, llama3 rope_freqs)", path=path)
    if "rope_freqs.weight" in tensors:  # Llama 3.1/3.2: llama.cpp divides frequency i by factor i
        factors = _dequantize(tensors["rope_freqs.weight"], 0, tensors["rope_freqs.weight"].shape[0], path)
        config["rope_factors"] = [float(x) for x in factors.reshape(-1)]
    if arch == "gemma3":  # llama.cpp hard-codes these for Gemma 3 (llama-model.cpp)
        config["sliding_window"] = int(meta("gemma3.attention.sliding_window", 0)) or None
        config["sliding_window_pattern"] = 6
        config["rope_local_base_freq"] = 10000.0
        # The 27B model scales queries by hidden_size / heads; the others by the head dim.
        config["query_pre_attn_scalar"] = config["hidden_size"] // n_heads if n_layers == 62 else config.get("head_dim", 256)
        config["hidden_activation"] = "gelu_pytorch_tanh"
    return config


def _dequantize(t: GgufTensor, first: int, end: int, path: str) -> np.ndarray:
    """Rows [first, end) of GGUF tensor ``t``, read from the file and dequantised to float32."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    qtype = GGMLQuantizationType(t.qtype)
    block, size = GGML_QUANT_SIZES[qtype]
    inner = t.shape[1:] or (1,)  # the elements of one row, the last dimension in blocks
    if inner[-1] % block:
        raise ModelFileError(f"tensor {t.name!r}: rows of {inner[-1]} are not whole {block}-blocks", path=path)
    blocked = (*inner[:-1], inner[-1] // block * size)
    n = (end - first) * prod(blocked)
    with open(path, "rb") as f:
        f.seek(t.offset + first * prod(blocked))
        raw = np.fromfile(f, dtype=np.uint8, count=n)
    if raw.size != n:
        raise ModelFileError(f"tensor {t.name!r} is truncated", path=path)
    w = np.asarray(dequantize(raw.reshape(end - first, *blocked), qtype), dtype=np.float32)
    return w.reshape(end - first, *t.shape[1:])


def _gguf_tensors(tensors: dict[str, GgufTensor], config: dict[str, Any], path: str) -> Source:
    """The GGUF's tensors under Hugging Face names, each read block by block on demand."""
    llama = config["model_type"] == "llama"
    gemma = config["model_type"] == "gemma3_text"
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    for t in tensors.values():
        name = _GGUF_NAMES.get(t.name)
        if name is None:
            m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", t.name)
            if m is None or m.group(2) not in _GGUF_BLOCK:
                continue  # rope_freqs went into the config
            part = "pre_feedforward_layernorm" if gemma and m.group(2) == "ffn_norm" else _GGUF_BLOCK[m.group(2)]
            name = f"model.layers.{m.group(1)}.{part}.{m.group(3)}"
        permuted = llama and (".q_proj." in name or ".k_proj." in name)
        shift = gemma and name.endswith("norm.weight")

        def read(first: int, end: int, t: GgufTensor = t, permuted: bool = permuted, shift: bool = shift) -> torch.Tensor:
            w = _dequantize(t, first, end, path)
            if permuted:  # blocks hold whole heads (``_fill`` aligns them)
                w = _unpermute(w, (end - first) // head_dim)
            if shift:  # llama.cpp stores Gemma's norms as 1 + w
                w = w - 1.0
            return torch.from_numpy(np.ascontiguousarray(w))

        yield name, t.shape, read


def _gguf_tokenizer(fields: dict[str, Any], path: str) -> Tokenizer | None:
    if "tokenizer.ggml.model" not in fields:
        return None
    tok = Tokenizer.from_gguf(fields, path)
    _give_back_freed_memory()  # building a 262k vocabulary frees ~50 MB the weights could reuse
    return tok


def _give_back_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise); a no-op elsewhere."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Tokenizer | None]:
    """A GGUF file -> (HF-style config dict, HF-named float32 state dict, tokenizer).

    This holds every tensor in float32 at once: it is for exporting (``export_hf_folder``) and
    inspection. ``load_model`` streams instead.
    """
    path = str(path)
    fields, tensors = _open_gguf(path)
    config = _gguf_config(fields, tensors, path)
    state = {name: read(0, shape[0]) for name, shape, read in _gguf_tensors(tensors, config, path)}
    tok = _gguf_tokenizer(fields, path)
    if tok is not None:
        config["bos_token_id"], config["eos_token_id"] = tok.bos_id, tok.eos_id
    return config, state, tok


# ---------------------------------------------------------------------------- Hugging Face folders


def _safetensors_tensors(folder: Path) -> Source:
    """Every tensor of the folder's ``*.safetensors`` files, read block by block (safetensors never runs code).

    Each file's header is checked first: a bad header, a truncated file or an unreadable one
    raises ModelFileError naming the file before anything is built.
    """
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelFileError("no *.safetensors weights in the model folder", path=str(folder))
    opened = []
    for f in files:
        try:
            opened.append(safe_open(str(f), framework="pt"))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ModelFileError(f"not a readable safetensors file: {reason}", path=str(f)) from exc

    def stream() -> Source:
        for st in opened:
            for name in st.keys():  # type: ignore[no-untyped-call]  # noqa: SIM118 - safe_open is not a mapping
                sl = st.get_slice(name)  # type: ignore[no-untyped-call]  # safetensors leaves it unannotated

                def read(first: int, end: int, sl: Any = sl) -> torch.Tensor:
                    part: torch.Tensor = sl[first:end]
                    return part

                yield name, tuple(sl.get_shape()), read

    return stream()


def _read_folder_config(path: Path) -> dict[str, Any]:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise ModelFileError("no config.json in the model folder", path=str(path))
    try:
        config: dict[str, Any] = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"config.json is not valid JSON: {exc}", path=str(cfg_path)) from exc
    if config.get("model_type", "llama") not in _SUPPORTED:
        raise ModelFileError(f"unsupported model_type {config.get('model_type')!r}", path=str(cfg_path))
    return config


# ---------------------------------------------------------------------------- entry points


def load_model(
    path: str | Path, *, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> tuple[Transformer, Tokenizer | None]:
    """A model folder or .gguf file -> (decoder in eval mode, tokenizer or None), streamed onto
    ``device`` in ``dtype`` one tensor at a time."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError("no such model file or folder", path=str(path))
    tok: Tokenizer | None
    if path.is_dir():
        config = _read_folder_config(path)
        source = _safetensors_tensors(path)
        tok = Tokenizer.from_folder(path) if (path / "tokenizer.json").exists() else None
    else:
        fields, tensors = _open_gguf(str(path))
        config = _gguf_config(fields, tensors, str(path))
        tok = _gguf_tokenizer(fields, str(path))  # before the weights: its temporaries are gone by then
        del fields  # the vocabulary as Python strings: 25 MB for Gemma
        source = _gguf_tensors(tensors, config, str(path))
    try:
        args = ModelArgs.from_hf_config(config)
    except KeyError as exc:
        raise ModelFileError(f"config is missing {exc}", path=str(path)) from exc
    except ValueError as exc:
        raise ModelFileError(f"unsupported config: {exc}", path=str(path)) from exc
    model = _empty_model(args, dtype, device)
    _fill(model, source, str(path))
    return model.eval().requires_grad_(False), tok


def export_hf_folder(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Write a GGUF's dequantised weights as a Hugging Face folder (so transformers can load them)."""
    from safetensors.torch import save_file

    config, state, tok = read_gguf(gguf_path)
    if tok is None:
        raise ModelFileError("the GGUF holds no tokenizer to export", path=str(gguf_path))
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
