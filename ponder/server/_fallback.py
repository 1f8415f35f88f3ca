"""An ordered fallback chain: try each model in turn until one answers.

The simplest fault-tolerant strategy (no scorer): a rung that fails (down, 429, 5xx, timeout,
malformed reply) hands the request to the next rung; when every rung fails the caller gets one
``AllModelsFailed`` naming each rung and why. Strategy file::

    {"format": "ponder-strategy", "version": 1, "kind": "fallback",
     "models": ["openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest"]}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._exceptions import (
    AllModelsFailed,
    ConfigError,
    ProviderError,
    UnknownModel,
)
from .._types import Answer, Attempt, ChatRequest, Completion

FALLTHROUGH = (ProviderError, UnknownModel)


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or exc or type(exc).__name__)


def failed_attempt(model: str, exc: Exception, latency_s: float = 0.0) -> Attempt:
    return Attempt(model=model, accepted=False, error=f"{type(exc).__name__}: {_reason(exc)}",
                   latency_s=latency_s)


def success_attempt(model: str, completion: Completion) -> Attempt:
    return Attempt(model=model, response=completion.text, accepted=True, cost_usd=completion.cost_usd,
                   latency_s=completion.latency_s, cached=completion.cached)


class FallbackChain:
    """Try ``models`` in order; the first one that answers wins. Failed rungs cost nothing."""

    kind = "fallback"

    def __init__(self, models: Sequence[str], name: str | None = None) -> None:
        self.models = list(models)
        self.name = name or "fallback"

    def _answer(self, failures: list[Attempt], model: str, completion: Completion) -> Answer:
        trace = (*failures, success_attempt(model, completion))
        return Answer(completion=completion, trace=trace, cost_usd=completion.cost_usd,
                      strategy=self.name)

    def run(self, request: ChatRequest, client: Any) -> Answer:
        failures: list[Attempt] = []
        errors: list[tuple[str, Exception]] = []
        for model in self.models:
            try:
                completion = client.complete(request, model=model)
            except FALLTHROUGH as exc:
                failures.append(failed_attempt(model, exc))
                errors.append((model, exc))
                continue
            return self._answer(failures, model, completion)
        raise AllModelsFailed(errors)

    async def arun(self, request: ChatRequest, client: Any) -> Answer:
        failures: list[Attempt] = []
        errors: list[tuple[str, Exception]] = []
        for model in self.models:
            try:
                completion = await client.acomplete(request, model=model)
            except FALLTHROUGH as exc:
                failures.append(failed_attempt(model, exc))
                errors.append((model, exc))
                continue
            return self._answer(failures, model, completion)
        raise AllModelsFailed(errors)


def load_strategy_file(path: str | Path, data: dict[str, Any]) -> FallbackChain:
    """Build a chain from a parsed ``kind: "fallback"`` strategy file."""
    models = data.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and ":" in m for m in models):
        raise ConfigError("a fallback strategy needs \"models\": a non-empty list of 'provider:model'",
                          file=str(path), key="models")
    return FallbackChain(models, name=str(data.get("name") or Path(path).stem))
