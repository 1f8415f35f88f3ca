"""The generation loop of the llama.cpp runtime, in numpy: the CPU default, without torch.

``LlamaCppEngine`` runs what ``Engine``'s host loop runs (prefill, then target-only or
prompt-lookup speculative steps, ``k`` adapting the same way) over a :class:`LlamaCppModel`, and
answers ``generate`` / ``generate_ids`` / ``stream`` as ``Engine`` does. Importing torch costs
more memory than the model it would run here (issue 23: 399 MB against 181 MB for SmolLM2), so
this loop samples and verifies in numpy. Greedy tokens are those ``Engine`` decodes on the same
model (a test checks); sampled runs draw from the same distributions (the contract of
``kernels/__init__.py``) with numpy's generator, so a seed gives other tokens than in torch.
A draft model or ``layers:N`` drafting needs the torch ``Engine`` (:func:`._runtime.load_engine`
picks it).

Verification with a prompt-lookup draft: the draft is deterministic (q is one-hot), so draft
token x_i is kept with probability p_i(x_i), and the first rejected one is replaced by a draw
from p_i with x_i removed (Leviathan et al.'s residual max(0, p - q), renormalised).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ConfigError, ContextTooLong
from ._generation import Generation, Sampling, TokenStream, prompt_ids
from ._llamacpp import LlamaCppModel, _Context
from ._tokenizer import Tokenizer

__all__ = ["LlamaCppEngine", "PromptLookup", "warp_probs", "sample"]


def warp_probs(logits: np.ndarray, temperature: float, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """(V,) logits -> the (V,) float64 distribution a token is drawn from: softmax(logits/T) cut
    to the top-k (ties to the lower id), renormalised, cut to the smallest top-p nucleus,
    renormalised; one-hot argmax when T <= 0 (``kernels._reference.warp_probs``)."""
    x = logits.astype(np.float64)
    if temperature <= 0:
        out = np.zeros_like(x)
        out[int(np.argmax(x))] = 1.0
        return out
    x = (x - x.max()) / temperature
    p: np.ndarray = np.exp(x)
    p /= p.sum()
    if (top_k <= 0 or top_k >= len(p)) and top_p >= 1.0:
        return p
    order = np.argsort(-p, kind="stable")  # descending, ties towards the lower id
    sp = p[order]
    if 0 < top_k < len(p):
        sp[top_k:] = 0.0
        sp /= sp.sum()
    if top_p < 1.0:
        before = np.cumsum(sp) - sp  # mass of the tokens ranked above
        sp[before >= top_p] = 0.0
        sp /= sp.sum()
    out = np.zeros_like(p)
    out[order] = sp
    return out


def _pick(p: np.ndarray, u: float) -> int:
    """Inverse CDF in ascending id order: the first id whose running mass exceeds u * total."""
    cdf = np.cumsum(p)
    i = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return min(i, int(np.flatnonzero(p)[-1]))  # rounding past the last kept token


def sample(logits: np.ndarray, params: Any, rng: np.random.Generator | None) -> int:
    """One token from (V,) logits: argmax (lowest id on ties) when greedy, else an inverse-CDF
    draw from :func:`warp_probs`. Greedy draws no noise."""
    if params.temperature <= 0 or rng is None:
        return int(np.argmax(logits))
    return _pick(warp_probs(logits, params.temperature, params.top_k, params.top_p), float(rng.random()))


def verify(draft: Sequence[int], logits: np.ndarray, params: Any, rng: np.random.Generator | None) -> tuple[list[int], int]:
    """Draft tokens (one-hot q) against the target's (k+1, V) logits -> (tokens to emit, number
    of drafts accepted): the accepted drafts, then the replacement of the first rejected one or
    the bonus token."""
    for i, x in enumerate(draft):
        if rng is None or params.temperature <= 0:  # greedy: keep the drafts the argmax agrees with
            best = int(np.argmax(logits[i]))
            if best != x:
                return [*draft[:i], best], i
            continue
        p = warp_probs(logits[i], params.temperature, params.top_k, params.top_p)
        if 1.0 - float(rng.random()) <= p[x]:  # u in (0, 1]: a token of probability 0 is never kept
            continue
        residual = p.copy()
        residual[x] = 0.0
        return [*draft[:i], _pick(residual if residual.sum() > 0 else p, float(rng.random()))], i
    return [*draft, sample(logits[len(draft)], params, rng)], len(draft)


class PromptLookup:
    """Prompt lookup drafting (``NgramDrafter``): continue the latest earlier occurrence of the
    last n tokens, n from ``max_ngram`` down to ``min_ngram``."""

    name = "ngram"

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1) -> None:
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def propose(self, seq: Sequence[int], k: int) -> list[int]:
        s = np.asarray(seq)
        L = len(s)
        for n in range(min(self.max_ngram, L - 1), self.min_ngram - 1, -1):
            windows = np.lib.stride_tricks.sliding_window_view(s[: L - 1], n)  # not the suffix itself
            hits = np.flatnonzero((windows == s[L - n :]).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                draft: list[int] = s[start : start + k].tolist()
                if draft:
                    return draft
        return []


def make_lookup(spec: str | None) -> PromptLookup | None:
    """``None``/``"none"`` or ``"ngram"``: the drafters this engine runs."""
    if spec in (None, "", "none"):
        return None
    if spec == "ngram":
        return PromptLookup()
    raise ConfigError(f"draft {spec!r}: the numpy loop of the llama.cpp runtime drafts by 'ngram' only")


class _Contexts:
    """llama.cpp contexts of finished streams, reused by the next ones (allocation is not free)."""

    def __init__(self, model: LlamaCppModel, keep: int) -> None:
        self.model, self.keep = model, keep
        self._free: list[_Context] = []
        self._lock = threading.Lock()

    def take(self, max_seq: int) -> _Context:
        with self._lock:
            for i, c in enumerate(self._free):
                if c.capacity >= max_seq:
                    return self._free.pop(i)
        return self.model.new_cache(max_seq)

    def give_back(self, c: _Context) -> None:
        with self._lock:
            self._free = [c, *self._free][: self.keep]


class LlamaCppEngine:
    """A :class:`LlamaCppModel`, its tokenizer and an optional prompt-lookup drafter; ``k`` adapts
    unless ``adaptive=False`` (as ``Engine``). Streams on one engine may be advanced in turn:
    each holds its own llama.cpp context; ``streams`` contexts are kept for reuse (the ``local:``
    provider's ``max_concurrency``)."""

    runtime = "llama.cpp"
    loop = "host"

    def __init__(
        self, model: LlamaCppModel, tokenizer: Tokenizer | None = None, drafter: PromptLookup | None = None, *,
        k: int = 4, adaptive: bool = True, k_max: int | None = None, streams: int = 1,
    ) -> None:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if streams < 1:
            raise ConfigError(f"streams must be >= 1, got {streams}")
        self.model, self.tokenizer, self.drafter = model, tokenizer, drafter
        self.k, self.adaptive = k, adaptive
        self.k_max = max(k_max or 2 * k, k)
        self._contexts = _Contexts(model, keep=streams)

    @classmethod
    def load(cls, model_path: str | Path, draft: str | None = None, *, threads: int | None = None, **kwargs: Any) -> LlamaCppEngine:
        drafter = make_lookup(draft)
        model = LlamaCppModel(model_path, n_threads=threads)
        return cls(model, model.tokenizer(), drafter, **kwargs)

    def generate_ids(
        self, prompt: Sequence[int], max_tokens: int = 256, params: Any = None, *,
        seed: int | None = None, stop_ids: Sequence[int] | None = None,
    ) -> tuple[list[int], str, Any]:
        """Token ids in -> (new token ids, finish reason, stats). ``stop_ids=()`` never stops early."""
        stream = self.stream(prompt, max_tokens, params, seed=seed, stop_ids=stop_ids)
        out = [t for chunk in stream for t in chunk]
        return out, stream.finish_reason, stream.stats

    def stream(
        self, prompt: Sequence[int], max_tokens: int = 256, params: Any = None, *,
        seed: int | None = None, stop_ids: Sequence[int] | None = None,
    ) -> TokenStream:
        """The new token ids as they are produced, one list per target step. ``params``: any
        object with ``temperature``, ``top_k`` and ``top_p`` (:class:`Sampling`, ``SamplingParams``)."""
        params = params or Sampling()
        stops = set(stop_ids) if stop_ids is not None else set(self.tokenizer.stop_ids) if self.tokenizer else set()
        P = len(prompt)
        if P == 0:
            raise ConfigError("the prompt is empty")
        limit = self.model.args.max_position
        if P + max_tokens > limit:
            raise ContextTooLong(f"{P} prompt + {max_tokens} new tokens exceed the context of {limit}", provider="local")
        stream = TokenStream(P)
        stream._gen = self._steps(stream, list(prompt), max_tokens, params, seed, stops)
        return stream

    def _steps(self, stream: TokenStream, seq: list[int], max_tokens: int, params: Any, seed: int | None,
               stops: set[int]) -> Iterator[list[int]]:
        model, stats, P, drafter = self.model, stream.stats, len(seq), self.drafter
        ctx = self._contexts.take(P + max_tokens + self.k_max + 1)
        rng = None if params.temperature <= 0 else np.random.default_rng(seed)
        try:
            t0 = time.perf_counter()
            first = sample(model.logits(seq, 0, last_only=True, cache=ctx)[0], params, rng)
            stats.prefill_s = time.perf_counter() - t0
            seq.append(first)
            if first in stops:
                stream.finish_reason = "stop"
                return
            yield [first]
            n_out, k = 1, self.k
            while n_out < max_tokens:
                t0 = time.perf_counter()
                room = max_tokens - n_out  # a step emits at most k + 1 tokens
                k_step = min(k, room - 1) if drafter is not None else 0
                draft = drafter.propose(seq, k_step) if drafter is not None and k_step > 0 else []
                logits = model.logits([seq[-1], *draft], len(seq) - 1, last_only=not draft, cache=ctx)
                new, n = verify(draft, logits, params, rng)
                if drafter is not None and k_step > 0:
                    stats.drafted += len(draft)
                    stats.accepted += n
                    stats.k_history.append(k_step)
                    if self.adaptive and draft:  # grow k after a full accept, shrink after a miss
                        k = min(k + 1, self.k_max) if n == len(draft) else max(1, k - 1)
                stats.target_steps += 1
                seq += new
                hit = next((i for i, t in enumerate(new) if t in stops), None)
                emit = new if hit is None else new[:hit]
                n_out += len(new) if hit is None else hit + 1
                stats.decode_s += time.perf_counter() - t0
                if emit:
                    yield emit
                if hit is not None:
                    stream.finish_reason = "stop"
                    return
        finally:
            self._contexts.give_back(ctx)

    def generate(
        self, prompt: str | Sequence[dict[str, str]], max_tokens: int = 256, params: Any = None, *,
        chat: bool = True, seed: int | None = None,
    ) -> Generation:
        """Text (or chat messages) in, text out. ``chat=True`` applies the model's chat template."""
        if self.tokenizer is None:
            raise ConfigError("this engine has no tokenizer; use generate_ids")
        ids = prompt_ids(self.tokenizer, prompt, chat)
        tokens, reason, stats = self.generate_ids(ids, max_tokens, params, seed=seed)
        return Generation(tokens, self.tokenizer.decode(tokens), reason, stats)
