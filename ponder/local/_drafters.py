"""Drafters propose k tokens (and the distribution q each was drawn from) for the target to verify.

- :class:`ModelDrafter`: a small model sharing the tokenizer, with its own KV cache;
- :class:`ModelDrafter` with ``n_layers=N`` on the target itself: the first N layers plus the
  head (self-speculation). It shares the target's cache for those layers, so it never prefills;
- :class:`NgramDrafter`: prompt lookup. Continue the latest earlier occurrence of the last n tokens;
  a zero-cost, deterministic draft (q is one-hot).

Cache bookkeeping: ``seq[:, :L]`` holds every token so far; the last one is still "pending" (not
in any cache). After verification the engine calls ``commit(valid)``: the target's cache holds
positions [0, valid).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from ._model import Transformer
from ._sampling import Noise, SamplingParams, probs, sample


class Drafter(Protocol):
    name: str

    def reset(self, max_seq_len: int, valid: int, batch: int = 1) -> None: ...

    def propose(self, seq: torch.Tensor, k: int, params: SamplingParams, noise: Noise) -> tuple[torch.Tensor, torch.Tensor]:
        """seq (1,L) -> draft tokens (1,k') and their draft probabilities (1,k',V), k' <= k."""
        ...

    def commit(self, valid: int) -> None: ...


class ModelDrafter:
    """Draft with a (small or truncated) model; tokens are sampled from the warped draft logits."""

    def __init__(self, model: Transformer, vocab_size: int, n_layers: int | None = None, shares_cache: bool = False, name: str = "model") -> None:
        self.model, self.vocab_size, self.n_layers = model, vocab_size, n_layers
        self.shares_cache, self.name = shares_cache, name
        self.n_cached = 0

    @classmethod
    def layers(cls, target: Transformer, n_layers: int) -> ModelDrafter:
        if not 0 < n_layers < target.args.n_layers:
            raise ValueError(f"layers:N needs 0 < N < {target.args.n_layers} (the target's depth), got {n_layers}")
        return cls(target, target.args.vocab_size, n_layers, shares_cache=True, name=f"layers:{n_layers}")

    def reset(self, max_seq_len: int, valid: int, batch: int = 1) -> None:
        if not self.shares_cache:
            self.model.setup_caches(batch, max_seq_len, backend=self.model.ops.name if self.model.caches else "auto")
        self.n_cached = valid if self.shares_cache else 0

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits_at(x, self.n_cached)
        self.n_cached += x.shape[1]
        return logits

    def logits_at(self, x: torch.Tensor, start_pos: int | torch.Tensor) -> torch.Tensor:
        """(B,V) draft logits after ``x`` at ``start_pos`` (an int, or a device tensor)."""
        logits: torch.Tensor = self.model(x, start_pos, n_layers=self.n_layers, last_only=True)[:, -1]
        V = self.vocab_size  # a draft vocabulary may be padded differently from the target's
        if logits.shape[-1] >= V:
            return logits[:, :V]
        return F.pad(logits, (0, V - logits.shape[-1]), value=float("-inf"))

    def propose(self, seq: torch.Tensor, k: int, params: SamplingParams, noise: Noise) -> tuple[torch.Tensor, torch.Tensor]:
        x = seq[:, self.n_cached :]  # catch up on everything this cache has not seen yet
        tokens, dists = [], []
        for _ in range(k):
            logits = self._logits(x)
            dists.append(probs(logits, params))
            x = sample(self.model.ops, logits, params, noise)[:, None]
            tokens.append(x)
        return torch.cat(tokens, dim=1), torch.stack(dists, dim=1)

    def commit(self, valid: int) -> None:
        # A shared cache was just rewritten by the target up to `valid`; our own is valid up to
        # the first position where our drafts diverged from what was kept.
        self.n_cached = valid if self.shares_cache else min(self.n_cached, valid)


class NgramDrafter:
    """Prompt lookup decoding: copy what followed the latest earlier match of the last n tokens."""

    name = "ngram"

    def __init__(self, vocab_size: int, max_ngram: int = 3, min_ngram: int = 1) -> None:
        self.vocab_size, self.max_ngram, self.min_ngram = vocab_size, max_ngram, min_ngram

    def reset(self, max_seq_len: int, valid: int, batch: int = 1) -> None:
        pass

    def commit(self, valid: int) -> None:
        pass

    def propose(self, seq: torch.Tensor, k: int, params: SamplingParams, noise: Noise) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows are assumed to share their context (batches exist for tests): row 0 is searched."""
        B, s = seq.shape[0], seq[0]
        L = s.shape[0]
        for n in range(min(self.max_ngram, L - 1), self.min_ngram - 1, -1):
            windows = s[: L - 1].unfold(0, n, 1)  # every earlier n-gram (not the suffix itself)
            hits = torch.nonzero((windows == s[L - n :]).all(dim=1)).flatten()
            if hits.numel():
                start = int(hits[-1]) + n
                draft = s[start : start + k][None].expand(B, -1)
                if draft.shape[1]:
                    return draft, F.one_hot(draft, self.vocab_size).float()
        return s[:0][None].expand(B, -1), torch.zeros(B, 0, self.vocab_size, device=seq.device)

    def lookup(self, seq: torch.Tensor, L: torch.Tensor, k: int) -> torch.Tensor:
        """:meth:`propose` with the length ``L`` (1,) on the device and a fixed shape (1,k): no host
        sync. Without a match it proposes the last token repeated (verification rejects what the
        target would not have produced, so any proposal is lossless)."""
        s, N = seq[0], seq.shape[1]
        start = L - 1  # no match: continue from the last token
        for n in range(self.min_ngram, self.max_ngram + 1):  # longer n-grams override shorter ones
            suffix = s.gather(0, (L - n + torch.arange(n, device=s.device)).clamp_min(0))
            ends = torch.arange(n, N + 1, device=s.device)  # end (exclusive) of every window
            hit = (s.unfold(0, n, 1) == suffix).all(1) & (ends < L) & (L > n)
            start = torch.where(hit.any(), torch.where(hit, ends, -1).max(), start)
        return s.gather(0, torch.minimum(start + torch.arange(k, device=s.device), L - 1))[None]
