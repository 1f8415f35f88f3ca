"""The generation loop: prefill, then speculative (or plain) steps until a stop token or the limit."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._exceptions import ConfigError, ContextTooLong
from ._drafters import Drafter, ModelDrafter, NgramDrafter
from ._loading import load_model
from ._model import Transformer
from ._sampling import Noise, SamplingParams, sample
from ._speculative import speculative_step
from ._tokenizer import Tokenizer

__all__ = ["Engine", "Generation", "GenerationStats", "make_drafter"]


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    target_steps: int = 0  # target forward passes after prefill (decode or verification)
    drafted: int = 0
    accepted: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    k_history: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens / drafted tokens."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted(self) -> float:
        """Draft tokens accepted per target step (gpt-fast's "mean accepted")."""
        return self.accepted / self.target_steps if self.target_steps else 0.0

    @property
    def tokens_per_step(self) -> float:
        return (self.new_tokens - 1) / self.target_steps if self.target_steps else 1.0

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of wall time, prefill included."""
        total = self.prefill_s + self.decode_s
        return self.new_tokens / total if total > 0 else 0.0

    def summary(self) -> str:
        s = f"{self.new_tokens} tokens in {self.prefill_s + self.decode_s:.2f}s ({self.tokens_per_s:.1f} tok/s, prefill {self.prompt_tokens} tokens {self.prefill_s:.2f}s)"
        if self.drafted:
            s += f"; acceptance {self.acceptance_rate:.1%}, mean accepted {self.mean_accepted:.2f}, {self.tokens_per_step:.2f} tokens/step"
        return s


@dataclass
class Generation:
    tokens: list[int]
    text: str
    finish_reason: str  # "stop" or "length"
    stats: GenerationStats


def make_drafter(spec: str | None, target: Transformer, *, dtype: torch.dtype = torch.float32) -> Drafter | None:
    """``None`` | ``"ngram"`` | ``"layers:N"`` | a path to a draft model sharing the tokenizer."""
    if spec is None or spec in ("", "none"):
        return None
    V = target.args.vocab_size
    if spec == "ngram":
        return NgramDrafter(V)
    if spec.startswith("layers:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError as exc:
            raise ConfigError(f"draft spec {spec!r}: N in layers:N must be an integer") from exc
        try:
            return ModelDrafter.layers(target, n)
        except ValueError as exc:
            raise ConfigError(f"draft spec {spec!r}: {exc}") from exc
    if not Path(spec).exists():
        raise ConfigError(f"draft {spec!r} is neither 'ngram', 'layers:N' nor an existing model path")
    draft, _ = load_model(spec, dtype=dtype, device=str(target.device))
    return ModelDrafter(draft, V, name=Path(spec).name)


class Engine:
    """A target model, its tokenizer and an optional drafter; ``k`` adapts unless ``adaptive=False``."""

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer | None = None,
        drafter: Drafter | None = None,
        *,
        k: int = 4,
        adaptive: bool = True,
        k_max: int | None = None,
        backend: str = "auto",
    ) -> None:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        self.model, self.tokenizer, self.drafter = model, tokenizer, drafter
        self.k, self.adaptive = k, adaptive
        self.k_max = k_max or 2 * k
        self.backend = backend

    @classmethod
    def load(cls, model_path: str | Path, draft: str | None = None, *, dtype: torch.dtype = torch.float32, device: str = "cpu", **kwargs: Any) -> Engine:
        model, tok = load_model(model_path, dtype=dtype, device=device)
        return cls(model, tok, make_drafter(draft, model, dtype=dtype), **kwargs)

    @torch.inference_mode()
    def generate_ids(
        self,
        prompt: Sequence[int],
        max_tokens: int = 256,
        params: SamplingParams | None = None,
        *,
        seed: int | None = None,
        stop_ids: Sequence[int] | None = None,
    ) -> tuple[list[int], str, GenerationStats]:
        """Token ids in -> (new token ids, finish reason, stats). ``stop_ids=()`` never stops early."""
        params = params or SamplingParams()
        model, drafter = self.model, self.drafter
        if stop_ids is not None:
            stops = set(stop_ids)
        else:
            stops = set(self.tokenizer.stop_ids) if self.tokenizer else set()
        P = len(prompt)
        if P == 0:
            raise ConfigError("the prompt is empty")
        limit = model.args.max_position
        if P + max_tokens > limit:
            raise ContextTooLong(f"{P} prompt + {max_tokens} new tokens exceed the context of {limit}", provider="local")
        max_seq = P + max_tokens + self.k_max + 1
        model.setup_caches(1, max_seq, self.backend)
        noise = Noise(seed, model.device)
        seq = torch.zeros(1, max_seq, dtype=torch.long, device=model.device)
        seq[0, :P] = torch.tensor(list(prompt), dtype=torch.long)
        stats = GenerationStats(prompt_tokens=P)

        t0 = time.perf_counter()
        logits = model(seq[:, :P], 0, last_only=True)[:, -1]
        first = int(sample(model.ops, logits, params, noise)[0])
        stats.prefill_s = time.perf_counter() - t0
        if drafter is not None:
            drafter.reset(max_seq, P)
        out, L, k, reason = [first], P + 1, self.k, "length"
        seq[0, P] = first
        t0 = time.perf_counter()
        while first not in stops and len(out) < max_tokens:
            room = max_tokens - len(out)  # a step emits at most k + 1 tokens
            if drafter is None or room == 1:
                logits = model(seq[:, L - 1 : L], L - 1, last_only=True)[:, -1]
                new, n = [int(sample(model.ops, logits, params, noise)[0])], 0
            else:
                k_step = min(k, room - 1)
                out_t, n_t, drafted = speculative_step(model, drafter, seq, L, k_step, params, noise)
                n = int(n_t[0])  # the one host sync per step: how far the sequence advanced
                new = out_t[0, : n + 1].tolist()
                stats.drafted += drafted
                stats.accepted += n
                stats.k_history.append(k_step)
                drafter.commit(L + n)  # the target's cache now holds [0, L + n)
                if self.adaptive and drafted:  # grow k after a full accept, shrink after a miss
                    k = min(k + 1, self.k_max) if n == drafted else max(1, k - 1)
            stats.target_steps += 1
            seq[0, L : L + len(new)] = torch.tensor(new, dtype=torch.long)
            L += len(new)
            hit = next((i for i, t in enumerate(new) if t in stops), None)
            out.extend(new if hit is None else new[: hit + 1])
            if hit is not None:
                break
        if out and out[-1] in stops:
            out.pop()
            reason = "stop"
        stats.decode_s = time.perf_counter() - t0
        stats.new_tokens = len(out)
        return out, reason, stats

    def generate(
        self,
        prompt: str | Sequence[dict[str, str]],
        max_tokens: int = 256,
        params: SamplingParams | None = None,
        *,
        chat: bool = True,
        seed: int | None = None,
    ) -> Generation:
        """Text (or chat messages) in, text out. ``chat=True`` applies the model's chat template."""
        if self.tokenizer is None:
            raise ConfigError("this engine has no tokenizer; use generate_ids")
        if isinstance(prompt, str):
            ids = self.tokenizer.encode_chat([{"role": "user", "content": prompt}]) if chat else self.tokenizer.encode(prompt)
        else:
            ids = self.tokenizer.encode_chat(list(prompt))
        tokens, reason, stats = self.generate_ids(ids, max_tokens, params, seed=seed)
        return Generation(tokens, self.tokenizer.decode(tokens), reason, stats)
