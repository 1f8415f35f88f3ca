"""Falling through to the next model, written once (:class:`FallThrough`: which failures pass a
request on, how they show in the trace, the error when all failed; which model comes next is the
strategy's business); and the two simplest strategies, :class:`FallbackChain` and :class:`SingleModel`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from .._exceptions import AllModelsFailed, ConfigError, ProviderError, UnknownModel
from .._types import Answer, Attempt, ChatRequest, Completion
from ._protocol import Chosen, StreamEvent, first_chosen, stream_model

FALLTHROUGH = (ProviderError, UnknownModel)
T = TypeVar("T")


def _reason(exc: Exception) -> str:
    """One line: why the call failed (the provider's reason, else the error's text)."""
    text = str(getattr(exc, "reason", None) or exc or "").strip()
    return text.splitlines()[0] if text else type(exc).__name__


def failed_attempt(model: str, exc: Exception, latency_s: float = 0.0) -> Attempt:
    """How a model that failed appears in a trace, for every strategy."""
    return Attempt(model=model, accepted=False, error=f"{type(exc).__name__}: {_reason(exc)}",
                   latency_s=latency_s)


class FallThrough:
    """One request's way down a list of models: each call returns the Completion (or the stream's
    first event), or the exception that falls through, recorded here; anything else propagates."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, Exception]] = []
        self.failures: list[Attempt] = []

    def _failed(self, model: str, exc: Exception, started: float) -> Exception:
        self.errors.append((model, exc))
        self.failures.append(failed_attempt(model, exc, time.perf_counter() - started))
        return exc

    def call(self, client: Any, request: ChatRequest, model: str) -> Completion | Exception:
        return self.attempt(model, lambda: client.complete(request, model=model))

    async def acall(self, client: Any, request: ChatRequest, model: str) -> Completion | Exception:
        return await self.aattempt(model, lambda: client.acomplete(request, model=model))

    def attempt(self, model: str, complete: Callable[[], Completion]) -> Completion | Exception:
        started = time.perf_counter()
        try:
            return complete()
        except FALLTHROUGH as exc:
            return self._failed(model, exc, started)

    async def aattempt(self, model: str, complete: Callable[[], Awaitable[T]]) -> T | Exception:
        started = time.perf_counter()
        try:
            return await complete()
        except FALLTHROUGH as exc:
            return self._failed(model, exc, started)

    async def astart(self, events: AsyncIterator[StreamEvent], model: str) -> Chosen | Exception:
        return await self.aattempt(model, partial(first_chosen, events))

    def answer(self, model: str, completion: Completion, strategy: str) -> Answer:
        """The answer of the model that answered, after the failures before it."""
        answered = Attempt(model=model, response=completion.text, accepted=True,
                           cost_usd=completion.cost_usd, latency_s=completion.latency_s,
                           cached=completion.cached)
        return Answer(completion=completion, trace=(*self.failures, answered),
                      cost_usd=completion.cost_usd, strategy=strategy)

    def all_failed(self) -> AllModelsFailed:
        return AllModelsFailed(self.errors)


class FallbackChain:
    """Try ``models`` in order (up to a stream's first byte); the first one that answers wins."""

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


def load_strategy_file(path: str | Path, data: dict[str, Any], *,
                       allow_outside: bool = False) -> FallbackChain:
    """Build a chain from a parsed ``kind: "fallback"`` strategy file (it names no files)."""
    models = data.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and ":" in m for m in models):
        raise ConfigError("a fallback strategy needs \"models\": a non-empty list of 'provider:model'",
                          file=str(path), key="models")
    return FallbackChain(models, name=str(data.get("name") or Path(path).stem))


class SingleModel:
    """Always ``model``. Its failures are the caller's (no fall-through: there is nowhere to go)."""

    kind = "single"

    def __init__(self, model: str) -> None:
        self.model = model
        self.name = model
        self.models = [model]

    def _answer(self, completion: Completion) -> Answer:
        return FallThrough().answer(self.model, completion, self.name)

    def run(self, request: ChatRequest, client: Any) -> Answer:
        return self._answer(client.complete(request, model=self.model))

    async def arun(self, request: ChatRequest, client: Any) -> Answer:
        return self._answer(await client.acomplete(request, model=self.model))

    def astream(self, request: ChatRequest, client: Any) -> AsyncIterator[StreamEvent]:
        return stream_model(client, request, self.model, self._answer)
