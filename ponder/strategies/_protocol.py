"""The live-strategy protocol: what the server, ``ponder ask`` and ``ponder run`` call.

``astream`` yields one :class:`Chosen` (the model whose text follows, yielded only once committed,
so a failure before it is an ordinary error with its own HTTP status; a strategy that answers
first, a cascade, puts the answer in it so the cost is known before the first byte), then text
deltas (``str``), then the :class:`~ponder.Answer`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .._exceptions import ProviderError
from .._types import Answer, ChatRequest, Completion


@dataclass(frozen=True, slots=True)
class Chosen:
    """The first event of a live stream: who answers (and the answer, when it is known already)."""

    model: str
    answer: Answer | None = None


StreamEvent = Chosen | str | Answer


class LiveStrategy(Protocol):
    """Anything that answers live requests: the one interface the server serves."""

    @property
    def name(self) -> str: ...

    @property
    def models(self) -> list[str]:
        """Every ``provider:model`` it may call (the server serves and warms these too)."""
        ...

    def run(self, request: ChatRequest, client: Any) -> Answer: ...

    async def arun(self, request: ChatRequest, client: Any) -> Answer: ...

    def astream(self, request: ChatRequest, client: Any) -> AsyncIterator[StreamEvent]: ...


def answered(answer: Answer) -> tuple[StreamEvent, ...]:
    """The stream events of an answer known whole: chosen (with the answer), its text, the answer."""
    text = answer.completion.text
    return (Chosen(answer.completion.spec, answer), *((text,) if text else ()), answer)


async def stream_model(client: Any, request: ChatRequest, model: str,
                       to_answer: Callable[[Completion], Answer]) -> AsyncGenerator[StreamEvent, None]:
    """Stream one model: :class:`Chosen` once its first item has arrived, its deltas, then
    ``to_answer(final completion)``; the upstream stream is closed however this one ends."""
    items = client.astream(request, model=model)
    completion: Completion | None = None
    try:
        item: str | Completion | None = await anext(items)
        yield Chosen(model)
        while item is not None:
            if isinstance(item, Completion):
                completion = item
            elif item:
                yield item
            item = await anext(items, None)
    finally:
        await aclose(items)
    if completion is None:
        raise ProviderError("stream ended without a final answer", provider=model)
    yield to_answer(completion)


async def first_chosen(events: AsyncIterator[StreamEvent]) -> Chosen:
    """A live stream's first event, which must be its :class:`Chosen`."""
    first = await anext(events)
    if not isinstance(first, Chosen):
        await aclose(events)
        raise TypeError(f"a live stream must start with Chosen, got {type(first).__name__}")
    return first


async def aclose(stream: Any) -> None:
    """Close an async iterator that can be closed (a generator, an SDK stream)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def as_live(strategy: Any) -> LiveStrategy:
    """``strategy`` as a full :class:`LiveStrategy`: one with only ``run`` or ``arun`` is wrapped
    (answered first, streamed whole)."""
    has = {m for m in ("run", "arun", "astream") if callable(getattr(strategy, m, None))}
    if has == {"run", "arun", "astream"}:
        return strategy  # type: ignore[no-any-return]
    if not has & {"run", "arun"}:
        raise TypeError(f"{type(strategy).__name__} is not a live strategy: it needs "
                        "run(request, client) or async arun(request, client)")
    return _Completed(strategy)


class _Completed:
    """A strategy with ``run`` or ``arun`` (or both), given the rest of the protocol."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.kind = getattr(inner, "kind", "custom")
        self.name = str(getattr(inner, "name", None) or type(inner).__name__)
        self.models = [str(m) for m in getattr(inner, "models", None) or []]

    def run(self, request: ChatRequest, client: Any) -> Answer:
        if callable(getattr(self.inner, "run", None)):
            return self.inner.run(request, client)  # type: ignore[no-any-return]
        return asyncio.run(self.inner.arun(request, client))  # type: ignore[no-any-return]

    async def arun(self, request: ChatRequest, client: Any) -> Answer:
        if callable(getattr(self.inner, "arun", None)):
            return await self.inner.arun(request, client)  # type: ignore[no-any-return]
        return await asyncio.to_thread(self.inner.run, request, client)

    async def astream(self, request: ChatRequest, client: Any) -> AsyncIterator[StreamEvent]:
        for event in answered(await self.arun(request, client)):
            yield event
