"""An ordered fallback chain: try each model in turn until one answers.

The simplest fault-tolerant strategy (no scorer): a rung that fails (down, 429, 5xx, timeout,
malformed reply) hands the request to the next rung; when every rung fails the caller gets one
``AllModelsFailed`` naming each rung and why. Streaming falls through the same way, up to the
first byte. Strategy file::

    {"format": "ponder-strategy", "version": 1, "kind": "fallback",
     "models": ["openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest"]}
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError
from .._types import Answer, ChatRequest, Completion
from ._fallthrough import FallThrough
from ._protocol import Chosen, StreamEvent, stream_model


class FallbackChain:
    """Try ``models`` in order; the first one that answers wins. Failed rungs cost nothing."""

    kind = "fallback"

    def __init__(self, models: Sequence[str], name: str | None = None) -> None:
        self.models = list(models)
        self.name = name or "fallback"

    def run(self, request: ChatRequest, client: Any) -> Answer:
        tries = FallThrough()
        for model in self.models:
            if isinstance(result := tries.call(client, request, model), Completion):
                return tries.answer(model, result, self.name)
        raise tries.all_failed()

    async def arun(self, request: ChatRequest, client: Any) -> Answer:
        tries = FallThrough()
        for model in self.models:
            if isinstance(result := await tries.acall(client, request, model), Completion):
                return tries.answer(model, result, self.name)
        raise tries.all_failed()

    async def astream(self, request: ChatRequest, client: Any) -> AsyncIterator[StreamEvent]:
        """Stream the first model that starts; a model that fails before its first byte passes on."""
        tries = FallThrough()
        for model in self.models:
            events = stream_model(client, request, model, partial(tries.answer, model, strategy=self.name))
            if isinstance(chosen := await tries.astart(events, model), Chosen):
                yield chosen
                async with aclosing(events):
                    async for event in events:
                        yield event
                return
        raise tries.all_failed()


def load_strategy_file(path: str | Path, data: dict[str, Any]) -> FallbackChain:
    """Build a chain from a parsed ``kind: "fallback"`` strategy file."""
    models = data.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and ":" in m for m in models):
        raise ConfigError("a fallback strategy needs \"models\": a non-empty list of 'provider:model'",
                          file=str(path), key="models")
    return FallbackChain(models, name=str(data.get("name") or Path(path).stem))
