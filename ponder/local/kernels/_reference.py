"""Torch reference implementations of the three hot ops (the contract in kernels/__init__.py).

They are the definition the Triton kernels are tested against, so they favour clarity and exact,
documented tie-breaking over speed. No host synchronisation: no ``.item()``, no Python branching
on tensor values (``attention`` slices the cache when ``start_pos`` is a Python int, which is host
data already).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["warp_probs", "sample", "verify_chain", "attention"]


def warp_probs(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """The distribution a row samples from: softmax(logits/T), cut to top-k then top-p, renormalised.

    temperature <= 0 gives the one-hot argmax (ties -> lowest id). Top-k ties are broken towards the
    lower token id (stable descending sort). Top-p keeps the smallest prefix of the descending order
    whose mass (after the top-k renormalisation) is >= p; ``top_p >= 1`` is off.
    """
    logits = logits.float()
    B, V = logits.shape
    greedy = temperature <= 0
    t = torch.where(greedy, torch.ones_like(temperature), temperature).float()
    probs = torch.softmax(logits / t[:, None], dim=-1)
    sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    rank = torch.arange(V, device=logits.device)[None, :]
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, V))
    keep = rank < k[:, None]
    sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
    sorted_p = sorted_p / sorted_p.sum(-1, keepdim=True)
    mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # exclusive cumsum
    nucleus = (mass_before < top_p.float()[:, None]) | (top_p.float()[:, None] >= 1.0)
    keep = keep & nucleus
    sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
    warped = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    warped = warped / warped.sum(-1, keepdim=True)
    onehot = torch.zeros_like(warped).scatter_(-1, torch.argmax(logits, dim=-1)[:, None], 1.0)
    return torch.where(greedy[:, None], onehot, warped)


def _inverse_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """First token id (ascending) whose running mass exceeds uniform * total mass."""
    cdf = torch.cumsum(probs, dim=-1)
    threshold = uniform.to(cdf.dtype)[:, None] * cdf[:, -1:]
    idx = (cdf <= threshold).sum(-1)
    # Rounding can push the threshold past the last kept token: clamp to the last kept one.
    last_kept = probs.shape[-1] - 1 - torch.argmax((probs.flip(-1) > 0).to(torch.int8), dim=-1)
    return torch.minimum(idx, last_kept).long()


def sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    uniform: torch.Tensor,
) -> torch.Tensor:
    """(B,V) logits -> (B,) tokens; deterministic given ``uniform`` (see the contract)."""
    greedy = temperature <= 0
    picked = _inverse_cdf(warp_probs(logits, temperature, top_k, top_p), uniform)
    return torch.where(greedy, torch.argmax(logits, dim=-1), picked)


def verify_chain(
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    uniform: torch.Tensor,
    exp_noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept draft tokens while u*q(x) <= p(x); then resample the first rejection or add a bonus.

    Returns ``out_tokens`` (B,k+1), padded with -1 after the emitted tokens, and ``num_accepted``
    (B,), the number of accepted draft tokens.
    """
    B, k = draft_tokens.shape
    rows = torch.arange(B, device=draft_tokens.device)
    p_x = target_probs[:, :k].gather(-1, draft_tokens[..., None]).squeeze(-1)
    q_x = draft_probs.gather(-1, draft_tokens[..., None]).squeeze(-1)
    accept = uniform.to(q_x.dtype) * q_x <= p_x
    num_accepted = torch.cumprod(accept.long(), dim=-1).sum(-1)  # leading run of accepts
    # Position n: the residual max(0, p - q) after a rejection, or p itself for the bonus token
    # (q is taken as zero there, so the same formula covers both).
    q_pad = torch.cat([draft_probs, torch.zeros_like(draft_probs[:, :1])], dim=1)
    p_n = target_probs[rows, num_accepted].float()
    residual = (p_n - q_pad[rows, num_accepted].float()).clamp_min(0)
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_n)
    # Exponential race: argmax r(v)/E_v with E_v ~ Exp(1) samples v with probability r(v)/sum(r).
    next_token = torch.argmax(residual / exp_noise.float(), dim=-1)
    pos = torch.arange(k + 1, device=draft_tokens.device)[None, :]
    drafted = torch.cat([draft_tokens, torch.zeros_like(draft_tokens[:, :1])], dim=1)
    out = torch.where(pos < num_accepted[:, None], drafted, torch.full_like(drafted, -1))
    out = torch.where(pos == num_accepted[:, None], next_token[:, None], out)
    return out, num_accepted


def attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    start_pos: int | torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal GQA attention of T new queries at start_pos.. over an already-updated KV cache."""
    B, Hq, T, D = q.shape
    Hkv, S = k_cache.shape[1], k_cache.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    group = Hq // Hkv
    if isinstance(start_pos, int):
        S = min(S, start_pos + T)  # positions past the last query are never attended: skip them
        k_cache, v_cache = k_cache[:, :, :S].to(q.dtype), v_cache[:, :, :S].to(q.dtype)
        if T == 1 or start_pos == 0:  # decode sees the whole prefix; prefill is plain causal
            return F.scaled_dot_product_attention(
                q, k_cache, v_cache, is_causal=T > 1, scale=scale, enable_gqa=group > 1
            )
        start = torch.full((B,), start_pos, dtype=torch.long, device=q.device)
    else:
        start = start_pos.to(device=q.device, dtype=torch.long).reshape(-1).expand(B)
    q_pos = start[:, None] + torch.arange(T, device=q.device)[None, :]  # (B,T)
    mask = torch.arange(S, device=q.device)[None, None, :] <= q_pos[:, :, None]  # (B,T,S)
    if group > 1:
        k_cache = k_cache.repeat_interleave(group, dim=1)
        v_cache = v_cache.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(
        q, k_cache.to(q.dtype), v_cache.to(q.dtype), attn_mask=mask[:, None], scale=scale
    )
