"""The trivial strategy: always the same model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .._types import Answer, ChatRequest, Completion
from ._fallthrough import success_attempt
from ._protocol import StreamEvent, stream_model


class SingleModel:
    """Always ``model``. Its failures are the caller's (no fall-through: there is nowhere to go)."""

    kind = "single"

    def __init__(self, model: str) -> None:
        self.model = model
        self.name = model
        self.models = [model]

    def _answer(self, completion: Completion) -> Answer:
        return Answer(completion=completion, trace=(success_attempt(self.model, completion),),
                      cost_usd=completion.cost_usd, strategy=self.name)

    def run(self, request: ChatRequest, client: Any) -> Answer:
        return self._answer(client.complete(request, model=self.model))

    async def arun(self, request: ChatRequest, client: Any) -> Answer:
        return self._answer(await client.acomplete(request, model=self.model))

    def astream(self, request: ChatRequest, client: Any) -> AsyncIterator[StreamEvent]:
        return stream_model(client, request, self.model, self._answer)
