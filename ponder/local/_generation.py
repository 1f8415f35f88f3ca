"""What a generation returns, with no torch: statistics, the token stream, the finished
generation, and the sampling settings of the torch-free engine.

``LlamaCppEngine`` (llama.cpp and numpy) hands these back; ``Engine`` (torch) returns classes of
the same shape, so the CLI, the ``local:`` provider and the benchmarks read one shape whichever
engine ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Generation", "GenerationStats", "Sampling", "TokenStream"]


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    target_steps: int = 0  # target forward passes after prefill (decode or verification)
    drafted: int = 0
    accepted: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0  # time in decode steps, not time a stream waited between them
    capture_s: float = 0.0  # graphs this request had to capture first (none once the engine is prepared)
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
        """Generated tokens per second of engine time (prefill + decode steps)."""
        total = self.prefill_s + self.decode_s
        return self.new_tokens / total if total > 0 else 0.0

    def summary(self) -> str:
        s = f"{self.new_tokens} tokens in {self.prefill_s + self.decode_s:.2f}s ({self.tokens_per_s:.1f} tok/s, prefill {self.prompt_tokens} tokens {self.prefill_s:.2f}s)"
        if self.drafted:
            s += f"; acceptance {self.acceptance_rate:.1%}, mean accepted {self.mean_accepted:.2f}, {self.tokens_per_step:.2f} tokens/step"
        if self.capture_s:
            s += f"; graph capture {self.capture_s:.2f}s (not in the times above)"
        return s


@dataclass
class Generation:
    tokens: list[int]
    text: str
    finish_reason: str  # "stop" or "length"
    stats: GenerationStats


class TokenStream:
    """New token ids as the engine produces them, one list per target step; once exhausted,
    ``finish_reason`` ("stop" or "length") and ``stats`` are final. ``close()`` stops early.

    Each chunk runs inside ``turn()`` (the engine's device made current, and no other engine's
    graph capture under way); the stream's KV caches go back to the engine when it ends, is closed
    or is dropped unstarted."""

    def __init__(self, prompt_tokens: int, turn: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        self.stats = GenerationStats(prompt_tokens=prompt_tokens)
        self.finish_reason = "length"
        self._gen: Iterator[list[int]] = iter(())
        self._turn = turn
        self._release: Callable[[], None] | None = None

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> list[int]:
        with self._turn():
            chunk = next(self._gen)
        self.stats.new_tokens += len(chunk)
        return chunk

    def close(self) -> None:
        close = getattr(self._gen, "close", None)
        if close is not None:
            close()
        self._give_back()

    def _give_back(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __del__(self) -> None:
        self._give_back()


def prompt_ids(tokenizer: Any, prompt: str | Sequence[dict[str, str]], chat: bool) -> list[int]:
    """A prompt's token ids, as both engines' ``generate`` read it: a string as one user turn
    through the chat template (``chat=True``) or as plain text, a message list through the template."""
    if isinstance(prompt, str):
        return list(tokenizer.encode_chat([{"role": "user", "content": prompt}]) if chat else tokenizer.encode(prompt))
    return list(tokenizer.encode_chat(list(prompt)))


@dataclass(frozen=True)
class Sampling:
    """Sampling settings as ``LlamaCppEngine`` reads them (``_sampling.SamplingParams`` is the
    torch engine's, with the same fields; either one works here). temperature 0 is greedy;
    top_k 0 and top_p 1.0 are off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0
