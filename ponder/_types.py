"""Value types shared by every part of ponder. Cost is always a returned value."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._exceptions import UnknownProvider, UnsupportedRequest

Role = Literal["system", "user", "assistant", "tool", "developer"]


def json_messages(text: str) -> list[dict[str, Any]] | None:
    """The messages of a prompt string that is a JSON list of message objects, else None."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        msgs = json.loads(text)
    except json.JSONDecodeError:
        return None
    return msgs if isinstance(msgs, list) and all(isinstance(m, dict) for m in msgs) else None


class Message(BaseModel):
    """One Chat Completions message; fields ponder does not model (``audio``) are sent on unchanged."""

    model_config = ConfigDict(frozen=True, extra="allow")
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # assistant turns
    tool_call_id: str | None = None  # tool turns

    @field_validator("content", mode="before")
    @classmethod
    def _parts(cls, v: Any) -> Any:
        for i, part in enumerate(v if isinstance(v, (list, tuple)) else ()):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise ValueError(f"content part {i} must be an object with a string 'type'")
        return v

    @property
    def text(self) -> str:
        """The message's text: the string, or its text parts joined (what scorers and routers read)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")

    @property
    def part_types(self) -> tuple[str, ...]:
        """The content part types this message carries (``("text", "image_url")``); ``()`` for a string."""
        if isinstance(self.content, list):
            return tuple(str(p["type"]) for p in self.content)
        return ()

    def wire(self) -> dict[str, Any]:
        """The message as the client sent it (OpenAI's JSON): every field it set, nothing added."""
        out = {k: v for k in self.model_fields_set if (v := getattr(self, k)) is not None or k == "content"}
        out["role"] = self.role
        if self.__pydantic_extra__:
            out.update(self.__pydantic_extra__)
        return out


# Fields of a request that cannot change its answer: left out of the cache key.
NOT_IN_KEY = frozenset({"user", "metadata", "store", "service_tier", "stream", "stream_options"})


class ChatRequest(BaseModel):
    """The whole Chat Completions request but ``model``; unset fields are not sent (the vendor's
    default applies), unmodelled ones are sent unchanged, and unhonoured ones refused by name."""

    model_config = ConfigDict(frozen=True, extra="allow")
    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1)  # answers per request, where the API has ``n`` (OpenAI)
    logprobs: bool | None = None  # ask for token log-probabilities, where the provider returns them
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    modalities: list[str] | None = None
    prediction: dict[str, Any] | None = None
    service_tier: str | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _coerce(cls, v: Any) -> Any:
        return (Message(role="user", content=v),) if isinstance(v, str) else v

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @classmethod
    def of(cls, prompt: str | list[dict[str, Any]] | list[Message], **params: Any) -> ChatRequest:
        """A request from a prompt string (a JSON list of messages reads as one) or messages."""
        if isinstance(prompt, str):
            msgs = json_messages(prompt)
            prompt = [Message(role="user", content=prompt)] if msgs is None else msgs
        return cls.model_validate({"messages": prompt, **params})

    def sampling(self) -> dict[str, Any]:
        """Every parameter that was set but ``messages``, as JSON: what an upstream receives."""
        out = self.model_dump(exclude={"messages"}, exclude_unset=True, exclude_none=True)
        if "stop" in out:
            out["stop"] = list(out["stop"])
        return out

    def wire_messages(self) -> list[dict[str, Any]]:
        return [m.wire() for m in self.messages]

    def key_fields(self) -> dict[str, Any]:
        """What the cache key covers: every field that can change the answer, none that cannot."""
        params = {k: v for k, v in self.sampling().items() if k not in NOT_IN_KEY}
        return {"messages": self.wire_messages(), "params": params}

    @property
    def deterministic(self) -> bool:
        """True when the answer is deterministic by contract: temperature explicitly 0."""
        return self.temperature is not None and self.temperature == 0

    @property
    def answer_tokens(self) -> int | None:
        """The output-token limit, whichever name it was sent under."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def prompt_text(self) -> str:
        """The last user message: what scorers and routers read as 'the query'."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text
        return self.messages[-1].text if self.messages else ""

    @property
    def query(self) -> str:
        """The request as one text for scorers and routers: a lone user message's text, else the
        conversation as JSON, so requests that end alike are told apart."""
        plain = not (self.tools or self.response_format) and all(
            isinstance(m.content, str) and not m.tool_calls and m.tool_call_id is None for m in self.messages)
        if plain and len(self.messages) == 1 and self.messages[0].role == "user":
            return self.messages[0].text
        rows: list[dict[str, Any]] = []
        for m in self.messages:
            row: dict[str, Any] = {"role": m.role, "content": m.content if isinstance(m.content, str) else m.text}
            kinds = [t for t in m.part_types if t != "text"]
            if kinds:
                row["parts"] = kinds
            if m.tool_calls:
                row["calls"] = [str((c.get("function") or {}).get("name", "")) for c in m.tool_calls]
            rows.append(row)
        if self.tools:
            rows.append({"role": "tools", "content": ", ".join(
                str((t.get("function") or {}).get("name", t.get("name", ""))) for t in self.tools)})
        if self.response_format:
            rows.append({"role": "response_format", "content": str(self.response_format.get("type", ""))})
        return json.dumps(rows, sort_keys=True, ensure_ascii=False)


def refuse_unsupported(request: ChatRequest, *, provider: str, model: str,
                       accepts: frozenset[str] | None, parts: frozenset[str] | None) -> None:
    """Refuse, before sending, the first field or content part type the provider does not honour."""
    if accepts is not None:
        for field in request.sampling():
            if field not in accepts:
                raise UnsupportedRequest(
                    f"'{field}' is not supported by this provider; remove it or route the request "
                    "to a model that has it", param=field, provider=provider, model=model)
    if parts is not None:
        for i, m in enumerate(request.messages):
            for kind in m.part_types:
                if kind not in parts:
                    raise UnsupportedRequest(
                        f"content part type '{kind}' (messages[{i}]) is not supported by this "
                        "provider", param=f"messages[{i}].content", provider=provider, model=model)


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0  # part of output_tokens (OpenAI's completion_tokens_details)


class LogprobStats(BaseModel):
    """Token log-probability statistics of one answer (from the provider's ``logprobs``)."""

    model_config = ConfigDict(frozen=True)
    mean: float
    min: float
    tokens: int


class Choice(BaseModel):
    """One of the ``n`` answers to a request, in the vendor's shape."""

    model_config = ConfigDict(frozen=True)
    content: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    refusal: str | None = None
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None  # the choice's ``logprobs`` object, as returned

    @property
    def text(self) -> str:
        return self.content or ""


class Completion(BaseModel):
    """One answer from one model; with ``n > 1``, ``samples`` holds all (``text`` the first) and
    ``cost_usd`` (0 on a cache hit) and ``usage`` cover them all."""

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
    choices: tuple[Choice, ...] = ()  # every answer with its tool calls, refusal and logprobs

    @property
    def tool_calls(self) -> tuple[dict[str, Any], ...]:
        """The first answer's tool calls (OpenAI's ``message.tool_calls``)."""
        return self.choices[0].tool_calls if self.choices else ()

    @property
    def refusal(self) -> str | None:
        return self.choices[0].refusal if self.choices else None

    def answers(self) -> tuple[Choice, ...]:
        """Every answer as a :class:`Choice` (from ``text``/``samples`` without structured ones)."""
        if self.choices:
            return self.choices
        texts = self.samples or (self.text,)
        return tuple(Choice(content=t, finish_reason=self.finish_reason) for t in texts)

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
    check: str | None = None  # the verifier the answer failed (``json_schema: ...``), when one did


class Answer(BaseModel):
    """What a live strategy (router, cascade, single model) returns: the answer, its trace and total cost."""

    model_config = ConfigDict(frozen=True)
    completion: Completion
    trace: tuple[Attempt, ...] = ()
    cost_usd: float = 0.0
    strategy: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)
