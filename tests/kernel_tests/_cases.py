"""Random inputs shared by the CPU (interpreter) and GPU kernel tests."""

from __future__ import annotations

import torch


def chain_inputs(B: int, k: int, V: int, *, seed: int, mode: str = "random", device="cpu"):
    """Draft/target probabilities, draft tokens and noise for verify_chain.

    mode: "random" (mostly rejections), "close" (target near draft: long accepted runs),
    "equal" (all accepted: bonus tokens), "zero_residual" (q = 2p: residual all zero, so the
    replacement falls back to p), "greedy" (one-hot probs).
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.softmax(torch.randn(B, k, V, generator=g) * 2, -1)
    p = torch.softmax(torch.randn(B, k + 1, V, generator=g) * 2, -1)
    if mode == "close":
        p[:, :k] = 0.8 * q + 0.2 * p[:, :k]
    elif mode == "equal":
        p[:, :k] = q
    elif mode == "zero_residual":
        q = 2 * p[:, :k]
    x = torch.multinomial(q.reshape(-1, V) / q.reshape(-1, V).sum(-1, keepdim=True), 1, generator=g)
    x = x.reshape(B, k)
    if mode == "greedy":
        tgt = torch.randint(0, 4, (B, k + 1), generator=g)
        x = torch.where(
            torch.rand(B, k, generator=g) < 0.7,
            tgt[:, :k],
            torch.randint(0, 4, (B, k), generator=g),
        )
        q = torch.nn.functional.one_hot(x, V).float()
        p = torch.nn.functional.one_hot(tgt, V).float()
    u = torch.rand(B, k, generator=g)
    if mode == "zero_residual":
        u = 0.5 + 0.5 * u  # u * 2p > p: reject at once
    e = torch.empty(B, V).exponential_(generator=g)
    return [t.to(device) for t in (x, q, p, u, e)]


def sample_inputs(B: int, V: int, *, seed: int, ties: bool = False, device="cpu"):
    """Logits and per-row sampling settings covering greedy, top-k, top-p and combinations."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, V, generator=g) * 3
    if ties:
        logits = logits.round()  # many exact ties: tie-breaking towards the lower id matters
    temps = torch.tensor([0.0, 0.7, 1.0, 1.5, 1.0, 0.3, 1.0, 2.0])
    top_k = torch.tensor([0, 0, 5, 0, 50, 1, V, 3])
    top_p = torch.tensor([1.0, 1.0, 1.0, 0.9, 0.8, 1.0, 0.5, 0.95])
    idx = torch.randperm(8, generator=g)[:B] if B <= 8 else torch.randint(0, 8, (B,), generator=g)
    u = torch.rand(B, generator=g)
    out = (logits, temps[idx], top_k[idx], top_p[idx], u)
    return [t.to(device) for t in out]


def attention_inputs(B, Hq, Hkv, T, D, S, start, *, seed: int, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, T, D, generator=g)
    kc = torch.randn(B, Hkv, S, D, generator=g)
    vc = torch.randn(B, Hkv, S, D, generator=g)
    q, kc, vc = (t.to(device=device, dtype=dtype) for t in (q, kc, vc))
    sp = torch.tensor(start, device=device) if isinstance(start, list) else start
    return q, kc, vc, sp
