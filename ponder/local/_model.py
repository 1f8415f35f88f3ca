"""A compact Llama-family decoder (Llama 2/3, Qwen2/2.5, Mistral, SmolLM2) with a static KV cache.

One module serves prefill (T = prompt length), decode (T = 1) and speculative verification
(T = k + 1): ``forward(tokens, start_pos)`` writes T new keys/values into the cache and attends
causally through the kernel dispatch. ``forward(..., n_layers=N)`` runs only the first N layers
(then the final norm and head): the self-speculative draft, which shares the target's cache for
those layers because their keys/values only depend on the tokens before them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import Ops, get_ops


@dataclass
class ModelArgs:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    head_dim: int = 0  # 0 -> dim // n_heads
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # Llama 3.1 "llama3" frequency scaling
    qkv_bias: bool = False  # Qwen2
    tie_embeddings: bool = False
    max_position: int = 4096
    arch: str = "llama"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.head_dim:
            self.head_dim = self.dim // self.n_heads

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> ModelArgs:
        """Read a Hugging Face ``config.json`` (LlamaForCausalLM, Qwen2ForCausalLM, Mistral...)."""
        arch = str(cfg.get("model_type", "llama"))
        n_heads = int(cfg["num_attention_heads"])
        # transformers >= 5 keeps rope_theta and the scaling inside "rope_parameters".
        rope = dict(cfg.get("rope_parameters") or {})
        scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            dim=int(cfg["hidden_size"]),
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
            intermediate_size=int(cfg["intermediate_size"]),
            head_dim=int(cfg.get("head_dim") or 0),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            rope_theta=float(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0),
            rope_scaling=scaling,
            qkv_bias=arch == "qwen2" or bool(cfg.get("attention_bias", False)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_position=int(cfg.get("max_position_embeddings", 4096)),
            arch=arch,
        )


class KVCache:
    """Preallocated keys/values of one layer: (B, Hkv, S, D)."""

    def __init__(self, batch: int, n_kv_heads: int, max_seq_len: int, head_dim: int, dtype: torch.dtype, device: Any) -> None:
        shape = (batch, n_kv_heads, max_seq_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> None:
        T = k.shape[2]
        self.k[:, :, start_pos : start_pos + T] = k
        self.v[:, :, start_pos : start_pos + T] = v


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_tables(args: ModelArgs, length: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (length, head_dim) in Hugging Face's rotate-half layout."""
    D = args.head_dim
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    scaling = args.rope_scaling or {}
    if scaling.get("rope_type", scaling.get("type")) == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - low) / (high - low)
        scaled = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        mid = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        inv_freq = torch.where(mid, scaled, inv_freq)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float().to(device), angles.sin().float().to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B,H,T,D) rotated by position; cos/sin (T,D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        qkv_out = (args.n_heads + 2 * args.n_kv_heads) * args.head_dim
        self.wqkv = nn.Linear(args.dim, qkv_out, bias=args.qkv_bias)  # q, k, v fused: one matmul
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, start_pos: int, ops: Ops) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.wqkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q = apply_rope(q.view(B, T, H, D).transpose(1, 2), cos, sin)
        k = apply_rope(k.view(B, T, Hkv, D).transpose(1, 2), cos, sin)
        cache.update(start_pos, k, v.view(B, T, Hkv, D).transpose(1, 2))
        y = ops.attention(q, cache.k, cache.v, start_pos)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * D))


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.hidden = args.intermediate_size
        self.w13 = nn.Linear(args.dim, 2 * args.intermediate_size, bias=False)  # gate and up fused
        self.w2 = nn.Linear(args.intermediate_size, args.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).split(self.hidden, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = FeedForward(args)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, start_pos: int, ops: Ops) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, cache, start_pos, ops)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.caches: list[KVCache] = []
        self.ops: Ops = get_ops("cpu", "torch")
        self.max_seq_len = 0

    @property
    def device(self) -> torch.device:
        return self.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_embeddings.weight.dtype

    def setup_caches(self, max_batch: int, max_seq_len: int, backend: str = "auto") -> None:
        """(Re)allocate the static KV cache and RoPE tables; cheap when the size did not change."""
        a = self.args
        self.ops = get_ops(self.device, backend)
        if self.caches and self.max_seq_len >= max_seq_len and self.caches[0].k.shape[0] == max_batch:
            return
        self.max_seq_len = max_seq_len
        self.caches = [
            KVCache(max_batch, a.n_kv_heads, max_seq_len, a.head_dim, self.dtype, self.device)
            for _ in range(a.n_layers)
        ]
        self.rope_cos, self.rope_sin = rope_tables(a, max_seq_len, self.device)

    def forward(self, tokens: torch.Tensor, start_pos: int, n_layers: int | None = None, last_only: bool = False) -> torch.Tensor:
        """tokens (B,T) at positions start_pos.. -> float logits (B,T,V), or (B,1,V) if last_only."""
        T = tokens.shape[1]
        if start_pos + T > self.max_seq_len:
            raise ValueError(f"sequence of {start_pos + T} tokens exceeds the KV cache ({self.max_seq_len})")
        cos = self.rope_cos[start_pos : start_pos + T].to(self.dtype)
        sin = self.rope_sin[start_pos : start_pos + T].to(self.dtype)
        x = self.tok_embeddings(tokens)
        n = self.args.n_layers if n_layers is None else n_layers
        for layer, cache in zip(self.layers[:n], self.caches[:n], strict=True):
            x = layer(x, cos, sin, cache, start_pos, self.ops)
        if last_only:
            x = x[:, -1:]
        return self.output(self.norm(x)).float()
