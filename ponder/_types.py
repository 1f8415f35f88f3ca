"""Value types shared by every part of ponder. Cost is always a returned value."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._exceptions import UnknownProvider

Role = Literal["system", "user", "assistant", "tool", "developer"]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)
    role: Role
    content: str


class ChatRequest(BaseModel):
    """Messages plus sampling parameters: everything that determines an answer (and its cache key)."""

    model_config = ConfigDict(frozen=True)
    messages: tuple[Message, ...]
    temperature: float = 0.0
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1)  # answers per request, where the API has ``n`` (OpenAI)
    logprobs: bool | None = None  # ask for token log-probabilities, where the provider returns them

    @field_validator("messages", mode="before")
    @classmethod
    def _coerce(cls, v: Any) -> Any:
        if isinstance(v, str):
            return (Message(role="user", content=v),)
        return tuple(v)

    @classmethod
    def of(cls, prompt: str | list[dict[str, str]] | list[Message], **params: Any) -> ChatRequest:
        """Build a request from a prompt string or a list of chat messages."""
        if isinstance(prompt, str):
            stripped = prompt.strip()
            if stripped.startswith("[") and stripped.endswith("]"):
                try:
                    msgs = json.loads(stripped)
                    if isinstance(msgs, list) and all(isinstance(m, dict) for m in msgs):
                        return cls.model_validate({"messages": msgs, **params})
                except json.JSONDecodeError:
                    pass
            return cls(messages=(Message(role="user", content=prompt),), **params)
        return cls.model_validate({"messages": prompt, **params})

    def sampling(self) -> dict[str, Any]:
        """Sampling parameters that were set, for provider calls."""
        return self.model_dump(exclude={"messages"}, exclude_none=True)

    @property
    def prompt_text(self) -> str:
        """The last user message: what scorers and routers read as 'the query'."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return self.messages[-1].content if self.messages else ""


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0


class LogprobStats(BaseModel):
    """Token log-probability statistics of one answer (from the provider's ``logprobs``)."""

    model_config = ConfigDict(frozen=True)
    mean: float
    min: float
    tokens: int


class Completion(BaseModel):
    """One answer from one model. ``cost_usd`` is what this call cost (0 on a cache hit).

    With ``n > 1`` on the request, ``samples`` holds every answer (``text`` is the first) and
    ``cost_usd``/``usage`` cover them all; ``logprobs`` describes ``text`` when it was asked for.
    """

    model_config = ConfigDict(frozen=True)
    text: str
    model: str
    provider: str
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    cost_estimated: bool = False
    saved_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    finish_reason: str | None = None
    samples: tuple[str, ...] = ()
    logprobs: LogprobStats | None = None

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"


class ModelSpec(BaseModel):
    """``provider:model``, e.g. ``openai:gpt-4o-mini``. The model part may itself contain colons."""

    model_config = ConfigDict(frozen=True)
    provider: str
    model: str

    @classmethod
    def parse(cls, spec: str | ModelSpec) -> ModelSpec:
        if isinstance(spec, ModelSpec):
            return spec
        provider, sep, model = spec.partition(":")
        if not sep or not provider or not model:
            raise UnknownProvider(
                f"model spec {spec!r} must look like 'provider:model', e.g. 'openai:gpt-4o-mini'"
            )
        return cls(provider=provider.strip().lower(), model=model.strip())

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


class Attempt(BaseModel):
    """One rung tried by a strategy: what it said, what it scored, what it cost."""

    model_config = ConfigDict(frozen=True)
    model: str  # provider:model spec
    response: str | None = None
    score: float | None = None  # scorer's P(acceptable), None when not scored
    accepted: bool = False
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    error: str | None = None  # one-line error when the provider failed


class Answer(BaseModel):
    """What a live strategy (router, cascade, single model) returns: the answer, its trace and total cost."""

    model_config = ConfigDict(frozen=True)
    completion: Completion
    trace: tuple[Attempt, ...] = ()
    cost_usd: float = 0.0
    strategy: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)
