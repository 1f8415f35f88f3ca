"""One speculative decoding step (Leviathan et al. 2023; Chen et al. 2023).

The draft proposes k tokens x_1..x_k drawn from q. One target pass over [pending, x_1..x_k]
gives p at the k+1 positions. Token i is kept with probability min(1, p_i(x_i)/q_i(x_i)); the
first rejected one is replaced by a draw from norm(max(0, p_i - q_i)); if all k survive, a
bonus token is drawn from p_{k+1}. Every emitted token is then distributed exactly as the target
alone would sample it, and with greedy (one-hot) p and q this reduces to "keep the longest
prefix the target's argmax agrees with, then the target's own next token".
"""

from __future__ import annotations

import torch

from ._drafters import Drafter
from ._model import Transformer
from ._sampling import Noise, SamplingParams, probs, sample


def speculative_step(
    target: Transformer,
    drafter: Drafter,
    seq: torch.Tensor,
    L: int,
    k: int,
    params: SamplingParams,
    noise: Noise,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Advance ``seq[:, :L]`` (B rows, last token pending) by one target pass.

    Returns ``out`` (B, k'+1: accepted drafts, then the resampled or bonus token, then -1), the
    accepted counts (B,) and k', the number of tokens actually drafted. The caller guarantees
    k + 1 free slots in ``seq`` and the KV caches.
    """
    draft, q = drafter.propose(seq[:, :L], k, params, noise)
    B, k = draft.shape
    if k == 0:  # nothing to propose (e.g. no n-gram match): a plain target step
        logits = target(seq[:, L - 1 : L], L - 1, last_only=True)[:, -1]
        out = sample(target.ops, logits, params, noise)[:, None]
        return out, torch.zeros(B, dtype=torch.long, device=out.device), 0
    # Verify: one target pass over the pending token and the k drafts scores all k + 1 slots.
    # It also writes their keys/values; slots past the accepted prefix are simply overwritten
    # by the next step, because attention never looks beyond its own position.
    logits = target(torch.cat([seq[:, L - 1 : L], draft], dim=1), L - 1)
    V = logits.shape[-1]
    p = probs(logits.reshape(B * (k + 1), V), params).reshape(B, k + 1, V)
    if params.greedy:  # one-hot p and q: any u in (0, 1] and any positive race noise agree
        u, race = torch.ones(B, k, device=p.device), torch.ones(B, V, device=p.device)
    else:
        u, race = noise.accept_uniform(B, k), noise.exponential(B, V)
    out, n_accepted = target.ops.verify_chain(draft, q.to(p.dtype), p, u, race)
    return out, n_accepted, k
