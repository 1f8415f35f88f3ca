"""Sampling parameters and the distributions the engine samples from.

Tokens are drawn by the dispatched ``ops.sample`` from explicit noise, and the full probability
vectors that speculative verification needs come from :func:`probs`, which is the same
distribution (``kernels._reference.warp_probs``) with host-side shortcuts for the common cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .kernels import Ops
from .kernels._reference import warp_probs


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 is greedy; top_k 0 and top_p 1.0 are off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def tensors(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            torch.full((batch,), float(self.temperature), device=device),
            torch.full((batch,), int(self.top_k), dtype=torch.long, device=device),
            torch.full((batch,), float(self.top_p), device=device),
        )


def one_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    """float one-hot rows of ``index`` (F.one_hot checks its range on the host: a sync)."""
    return torch.zeros(*index.shape, n, device=index.device).scatter_(-1, index[..., None], 1.0)


def probs(
    logits: torch.Tensor, params: SamplingParams, values: tuple[torch.Tensor, ...] | None = None, ops: Ops | None = None,
) -> torch.Tensor:
    """(N,V) logits -> (N,V) float probabilities of the warped distribution (one-hot when greedy).

    ``values``: (temperature, top_k, top_p) tensors of one row to read the settings from instead
    of ``params`` (the device loop's buffers: one captured graph serves every setting); ``params``
    still picks the branch. ``ops``: whose ``warp_probs`` cuts top-k / top-p (the Triton one finds
    thresholds without sorting the vocabulary); the torch reference without.
    """
    logits = logits.float()
    if params.greedy:
        return one_hot(torch.argmax(logits, dim=-1), logits.shape[-1])
    if params.top_k <= 0 and params.top_p >= 1.0:
        return torch.softmax(logits / (params.temperature if values is None else values[0][:, None]), dim=-1)
    n = logits.shape[0]
    temp, top_k, top_p = values or params.tensors(n, logits.device)
    warp = warp_probs if ops is None else ops.warp_probs
    return warp(logits, temp.expand(n), top_k.expand(n), top_p.expand(n))


class Noise:
    """All randomness of one generation, from one seeded generator (so runs are reproducible)."""

    def __init__(self, seed: int | None, device: torch.device) -> None:
        self.device = device
        self.gen = torch.Generator(device=device)
        if seed is None:
            self.gen.seed()
        else:
            self.gen.manual_seed(int(seed))

    def uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen, device=self.device)

    def accept_uniform(self, *shape: int) -> torch.Tensor:
        # (0, 1]: u == 0 would accept a token the target gives probability 0.
        return 1.0 - self.uniform(*shape)

    def exponential(self, *shape: int) -> torch.Tensor:
        return self.fill_exponential(torch.empty(shape, device=self.device))

    def fill_exponential(self, out: torch.Tensor) -> torch.Tensor:
        """Exp(1) noise written into ``out`` (a static buffer of the device loop)."""
        return out.exponential_(generator=self.gen).clamp_min_(torch.finfo(out.dtype).tiny)

    def fill_accept_uniform(self, out: torch.Tensor) -> torch.Tensor:
        return out.uniform_(generator=self.gen).neg_().add_(1.0)  # (0, 1], as accept_uniform


def sample(ops: Ops, logits: torch.Tensor, params: SamplingParams, noise: Noise) -> torch.Tensor:
    """(B,V) logits -> (B,) tokens through the dispatched kernel."""
    B = logits.shape[0]
    if params.greedy:  # no noise drawn, so greedy runs never touch the generator
        return torch.argmax(logits, dim=-1)
    tokens: torch.Tensor = ops.sample(logits, *params.tensors(B, logits.device), noise.uniform(B))
    return tokens
