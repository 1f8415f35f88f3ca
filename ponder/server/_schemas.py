"""The OpenAI chat-completions wire format, as much of it as ponder serves (for validation and OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _integral(v: Any) -> Any:
    """JSON has one number type: accept 64.0 where an integer is due (as JSON Schema does)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


_Integral = BeforeValidator(_integral)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(_Open):
    type: Literal["text"]
    text: str


class ChatMessageIn(_Open):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatCompletionRequest(_Open):
    """Unknown fields are accepted and ignored (as OpenAI-compatible servers do), except the ones
    that would change the answer's shape and that ponder cannot honour (tools, n > 1)."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessageIn] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000), _Integral] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=1_000_000), _Integral] | None = None
    stop: str | list[str] | None = None
    seed: Annotated[int, Field(ge=-(2**53), le=2**53), _Integral] | None = None  # bounds exact in JSON numbers
    n: Annotated[int, Field(ge=1, le=1), _Integral] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    tools: None = Field(default=None, description="not supported by ponder")
    tool_choice: None = Field(default=None, description="not supported by ponder")
    functions: None = Field(default=None, description="not supported by ponder")
    function_call: None = Field(default=None, description="not supported by ponder")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str


class Choice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: str


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class PonderInfo(BaseModel):
    model: str
    cost_usd: float
    cached: bool
    saved_usd: float
    strategy: str
    trace: list[dict[str, Any]]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: UsageOut
    ponder: PonderInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]
    models: int
