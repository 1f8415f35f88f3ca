"""A compact decoder (Llama 2/3/3.1/3.2, Qwen2/2.5/3, Mistral, SmolLM2, Gemma 3) with a static KV cache.

One module serves prefill (T = prompt length), decode (T = 1) and speculative verification
(T = k + 1): ``forward(tokens, start_pos)`` writes T new keys/values into the cache and attends
causally through the kernel dispatch. ``forward(..., n_layers=N)`` runs only the first N layers
(then the final norm and head): the self-speculative draft, which shares the target's cache for
those layers because their keys/values only depend on the tokens before them.

Architectures differ only in a few switches of :class:`ModelArgs`: Qwen2's q/k/v bias, Qwen3's and
Gemma 3's per-head q/k RMSNorm, and Gemma 3's scaled embeddings, (1 + w) norms, extra norms after
attention and MLP, GELU-tanh MLP and sliding-window layers with their own RoPE base.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
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
    rope_scaling: dict[str, Any] | None = None  # "llama3" (Llama 3.1/3.2) or "linear"
    rope_factors: list[float] | None = None  # a GGUF's rope_freqs: divides each frequency
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Qwen3, Gemma 3: RMSNorm over each head of q and k before RoPE
    tie_embeddings: bool = False
    max_position: int = 4096
    arch: str = "llama"
    # Gemma 3
    gemma: bool = False  # embeddings * sqrt(dim), (1 + w) norms, post-attention/-MLP norms, GELU-tanh
    attn_scale: float | None = None  # None: 1/sqrt(head_dim)
    sliding_window: int = 0
    sliding_layers: tuple[bool, ...] = ()  # per layer: attends to the last sliding_window tokens only
    rope_local_theta: float = 10000.0  # RoPE base of the sliding layers
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.head_dim:
            self.head_dim = self.dim // self.n_heads
        if self.sliding_layers and len(self.sliding_layers) != self.n_layers:
            raise ValueError(f"sliding_layers has {len(self.sliding_layers)} entries for {self.n_layers} layers")

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> ModelArgs:
        """Read a Hugging Face ``config.json`` (Llama, Qwen2/3, Mistral, Gemma 3 text)."""
        arch = str(cfg.get("model_type", "llama"))
        gemma = arch in ("gemma3", "gemma3_text")
        for cap in ("attn_logit_softcapping", "final_logit_softcapping"):
            if cfg.get(cap) is not None:
                raise ValueError(f"{cap} is not supported")
        n_heads, n_layers = int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"])
        # transformers >= 5 keeps rope_theta and the scaling inside "rope_parameters", per layer
        # type when layers differ (Gemma 3: "full_attention" and "sliding_attention").
        rope = dict(cfg.get("rope_parameters") or {})
        local = dict(rope.get("sliding_attention") or {"rope_theta": cfg.get("rope_local_base_freq", 10000.0)})
        rope = dict(rope.get("full_attention", rope))
        scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        window = int(cfg.get("sliding_window") or 0)
        types = cfg.get("layer_types")
        if gemma and not types:
            every = int(cfg.get("sliding_window_pattern", 6))
            types = ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(n_layers)]
        if arch == "mistral" and window and not types:
            types = ["sliding_attention"] * n_layers
        sliding = tuple(t == "sliding_attention" for t in types) if window and types and not arch.startswith("qwen") else ()
        scalar = cfg.get("query_pre_attn_scalar")
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            dim=int(cfg["hidden_size"]),
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
            intermediate_size=int(cfg["intermediate_size"]),
            head_dim=int(cfg.get("head_dim") or 0),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6 if gemma else 1e-5)),
            rope_theta=float(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0),
            rope_scaling=scaling,
            rope_factors=cfg.get("rope_factors"),
            qkv_bias=arch == "qwen2" or bool(cfg.get("attention_bias", False)),
            qk_norm=gemma or arch == "qwen3",
            tie_embeddings=bool(cfg.get("tie_word_embeddings", gemma)),
            max_position=int(cfg.get("max_position_embeddings", 4096)),
            arch=arch,
            gemma=gemma,
            attn_scale=float(scalar) ** -0.5 if scalar else None,
            sliding_window=window if any(sliding) else 0,
            sliding_layers=sliding if any(sliding) else (),
            rope_local_theta=float(local.get("rope_theta") or 10000.0),
        )


class KVCache:
    """Preallocated keys/values of one layer: (B, Hkv, S, D)."""

    def __init__(self, batch: int, n_kv_heads: int, max_seq_len: int, head_dim: int, dtype: torch.dtype, device: Any) -> None:
        shape = (batch, n_kv_heads, max_seq_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, where: slice | torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write T keys/values at ``where``: a slice, or (T,) positions on the device."""
        if isinstance(where, slice):
            self.k[:, :, where] = k
            self.v[:, :, where] = v
        else:  # index_copy_ reads the positions on the device: no host sync, graph-safe
            self.k.index_copy_(2, where, k)
            self.v.index_copy_(2, where, v)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, unit_offset: bool = False) -> None:
        super().__init__()
        self.eps, self.unit_offset = eps, unit_offset
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.unit_offset:  # Gemma scales by (1 + w), in float32 as transformers does
            return (xf * (1.0 + self.weight.float())).to(x.dtype)
        return self.weight * xf.to(x.dtype)


def rope_tables(args: ModelArgs, length: int, device: Any = None, *, local: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (length, head_dim) in Hugging Face's rotate-half layout.

    ``local=True``: the sliding layers' tables (their own base, never scaled).
    """
    D = args.head_dim
    theta = args.rope_local_theta if local else args.rope_theta
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    scaling = {} if local else (args.rope_scaling or {})
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - low) / (high - low)
        scaled = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        mid = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        inv_freq = torch.where(mid, scaled, inv_freq)
    elif kind == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    elif kind != "default":
        raise ValueError(f"RoPE scaling {kind!r} is not supported (default, linear, llama3)")
    if args.rope_factors is not None and not local:  # llama.cpp's rope_freqs: theta_i / factor_i
        inv_freq = inv_freq / torch.tensor(args.rope_factors, dtype=torch.float64)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float().to(device), angles.sin().float().to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B,H,T,D) rotated by position; cos/sin (T,D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: int | torch.Tensor, window: int, scale: float | None) -> torch.Tensor:
    """Causal attention where query position p sees cache positions (p - window, p] only."""
    T = q.shape[2]
    if isinstance(start_pos, int):
        S = start_pos + T
        q_pos = torch.arange(start_pos, S, device=q.device)[:, None]
    else:  # positions on the device: mask over the whole cache (static shapes)
        S = k.shape[2]
        q_pos = (start_pos.reshape(-1)[:1] + torch.arange(T, device=q.device))[:, None]
    k_pos = torch.arange(S, device=q.device)[None, :]
    mask = (k_pos <= q_pos) & (k_pos > q_pos - window)
    k, v = k[:, :, :S].to(q.dtype), v[:, :, :S].to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, window: int = 0) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.scale, self.window = args.attn_scale, window
        qkv_out = (args.n_heads + 2 * args.n_kv_heads) * args.head_dim
        self.wqkv = nn.Linear(args.dim, qkv_out, bias=args.qkv_bias)  # q, k, v fused: one matmul
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        if args.qk_norm:
            self.q_norm = RMSNorm(args.head_dim, args.norm_eps, args.gemma)
            self.k_norm = RMSNorm(args.head_dim, args.norm_eps, args.gemma)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, start_pos: int | torch.Tensor, ops: Ops, where: slice | torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.wqkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q, k = q.view(B, T, H, D), k.view(B, T, Hkv, D)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)
        k = apply_rope(k.transpose(1, 2), cos, sin)
        cache.update(where, k, v.view(B, T, Hkv, D).transpose(1, 2))
        if self.window and (not isinstance(start_pos, int) or start_pos + T > self.window):  # it cuts
            y = window_attention(q, cache.k, cache.v, start_pos, self.window, self.scale)
        else:
            y = ops.attention(q, cache.k, cache.v, start_pos, scale=self.scale)
        out: torch.Tensor = self.wo(y.transpose(1, 2).reshape(B, T, H * D))
        return out


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.hidden = args.intermediate_size
        self.act = partial(F.gelu, approximate="tanh") if args.gemma else F.silu
        self.w13 = nn.Linear(args.dim, 2 * args.intermediate_size, bias=False)  # gate and up fused
        self.w2 = nn.Linear(args.intermediate_size, args.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).split(self.hidden, dim=-1)
        out: torch.Tensor = self.w2(self.act(gate) * up)
        return out


class Block(nn.Module):
    def __init__(self, args: ModelArgs, sliding: bool = False) -> None:
        super().__init__()
        self.sliding = sliding
        self.attention_norm = RMSNorm(args.dim, args.norm_eps, args.gemma)
        self.attention = Attention(args, args.sliding_window if sliding else 0)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps, args.gemma)
        self.feed_forward = FeedForward(args)
        if args.gemma:  # Gemma normalises each sub-layer's output too
            self.post_attention_norm = RMSNorm(args.dim, args.norm_eps, True)
            self.post_ffn_norm = RMSNorm(args.dim, args.norm_eps, True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, start_pos: int | torch.Tensor, ops: Ops, where: slice | torch.Tensor) -> torch.Tensor:
        h = self.attention(self.attention_norm(x), cos, sin, cache, start_pos, ops, where)
        if hasattr(self, "post_attention_norm"):
            h = self.post_attention_norm(h)
        x = x + h
        h = self.feed_forward(self.ffn_norm(x))
        if hasattr(self, "post_ffn_norm"):
            h = self.post_ffn_norm(h)
        out: torch.Tensor = x + h
        return out


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        # On the meta device (loading builds there) the table is left uninitialised: normal_ on meta
        # would import torch._dynamo, 150 MB and seconds, for values the loader overwrites anyway.
        table = torch.empty(args.vocab_size, args.dim) if torch.empty(0).is_meta else None
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim, _weight=table)
        sliding = args.sliding_layers or (False,) * args.n_layers
        self.layers = nn.ModuleList(Block(args, s) for s in sliding)
        self.norm = RMSNorm(args.dim, args.norm_eps, args.gemma)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.caches: list[KVCache] = []
        self.ops: Ops = get_ops("cpu", "torch")
        self.max_seq_len = 0
        self.fused = False  # tensor-position forwards use the fused kernels where ``fusable``
        self.prefill_chunk = 2048  # a longer prompt is prefilled in pieces of this many tokens

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
        self.rope_cast = self.rope_cos.to(self.dtype).contiguous(), self.rope_sin.to(self.dtype).contiguous()
        if a.sliding_layers:
            self.rope_local_cos, self.rope_local_sin = rope_tables(a, max_seq_len, self.device, local=True)

    @property
    def fusable(self) -> bool:
        """Whether the fused Triton layer kernels compute this architecture (Llama, Qwen2, Mistral
        without a window); Gemma's extra norms and Qwen3's q/k norms run in torch."""
        a = self.args
        return self.ops.name == "triton" and not (a.gemma or a.qk_norm or a.sliding_layers)

    def forward(self, tokens: torch.Tensor, start_pos: int | torch.Tensor, n_layers: int | None = None, last_only: bool = False) -> torch.Tensor:
        """tokens (B,T) at positions start_pos.. -> float logits (B,T,V), or (B,1,V) if last_only.

        ``start_pos`` is an int, or a (1,) long tensor on the model's device: the form the device
        loop uses, with no host sync (CUDA graphs), where the caller guarantees room in the cache.
        A prefill (int position, ``last_only``) longer than ``prefill_chunk`` runs in chunks, so
        its activations and attention scratch are bounded by the chunk, not the prompt.
        """
        T = tokens.shape[1]
        if isinstance(start_pos, int) and last_only and T > self.prefill_chunk:
            for at in range(0, T, self.prefill_chunk):
                logits = self.forward(tokens[:, at : at + self.prefill_chunk], start_pos + at, n_layers, last_only=True)
            return logits
        where: slice | torch.Tensor
        if isinstance(start_pos, int):
            if start_pos + T > self.max_seq_len:
                raise ValueError(f"sequence of {start_pos + T} tokens exceeds the KV cache ({self.max_seq_len})")
            where = slice(start_pos, start_pos + T)
        else:
            if self.fused and self.fusable:
                return self._forward_fused(tokens, start_pos, n_layers, last_only)
            where = start_pos.reshape(-1)[:1] + torch.arange(T, device=tokens.device)
        cos, sin = self.rope_cos[where].to(self.dtype), self.rope_sin[where].to(self.dtype)
        if self.args.sliding_layers:
            local = self.rope_local_cos[where].to(self.dtype), self.rope_local_sin[where].to(self.dtype)
        x = self.tok_embeddings(tokens)
        if self.args.gemma:
            x = x * torch.tensor(self.args.dim**0.5, dtype=x.dtype)
        n = self.args.n_layers if n_layers is None else n_layers
        for layer, cache in zip(self.layers[:n], self.caches[:n], strict=True):
            c, s = local if layer.sliding else (cos, sin)
            x = layer(x, c, s, cache, start_pos, self.ops, where)
        if last_only:
            x = x[:, -1:]
        out: torch.Tensor = self.output(self.norm(x)).float()
        return out

    def _forward_fused(self, tokens: torch.Tensor, pos: torch.Tensor, n_layers: int | None, last_only: bool) -> torch.Tensor:
        """The same layer math in 4 matmuls + attention + 4 fused launches per layer (at batch 1
        the ~35 small kernels of the torch layer code cost more than the weights take to read).
        Rounds differently from :meth:`forward` (fused multiply-adds), so greedy tokens of the two
        paths may part after a while; each is consistent with itself."""
        from .kernels._triton_fused import add_rmsnorm, rope_kv_append, silu_mul

        a = self.args
        B, T = tokens.shape
        n = a.n_layers if n_layers is None else n_layers
        layers: list[Block] = list(self.layers[:n])  # type: ignore[arg-type]
        cos, sin = self.rope_cast
        x = self.tok_embeddings(tokens)
        h, _ = add_rmsnorm(x, None, layers[0].attention_norm.weight, a.norm_eps)
        for i, (layer, cache) in enumerate(zip(layers, self.caches[:n], strict=True)):
            att, ff = layer.attention, layer.feed_forward
            q = rope_kv_append(F.linear(h, att.wqkv.weight, att.wqkv.bias), cos, sin, pos, cache.k, cache.v, a.n_heads, a.n_kv_heads)
            y = self.ops.attention(q, cache.k, cache.v, pos, scale=att.scale)
            h, x = add_rmsnorm(att.wo(y.transpose(1, 2).reshape(B, T, a.n_heads * a.head_dim)), x, layer.ffn_norm.weight, a.norm_eps)
            nxt = layers[i + 1].attention_norm.weight if i + 1 < n else self.norm.weight
            h, x = add_rmsnorm(ff.w2(silu_mul(ff.w13(h))), x, nxt, a.norm_eps)
        if last_only:
            h = h[:, -1:]
        logits: torch.Tensor = self.output(h).float()
        return logits
