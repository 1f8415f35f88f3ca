"""OpenAI's wire format out: answers (one ``chat.completion`` body, or ``chat.completion.chunk``
server-sent events) and error bodies (every one scrubbed), with the HTTP status of each ponder error."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from .._exceptions import (
    AllModelsFailed,
    AuthError,
    BudgetExceeded,
    ContextTooLong,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    UnknownModel,
    UnknownProvider,
    UnsupportedRequest,
)
from .._secrets import scrub
from .._types import Answer, Choice, Completion
from ._schemas import ChatCompletionRequest

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def _finish(reason: str | None) -> str:
    return _FINISH.get(reason or "stop", reason or "stop")


def _message(ch: Choice) -> dict[str, Any]:
    """One answer as OpenAI's ``message``: ``content`` null on a turn that only calls tools."""
    msg: dict[str, Any] = {"role": "assistant",
                           "content": None if ch.tool_calls and not ch.content else ch.text,
                           "refusal": ch.refusal}
    if ch.tool_calls:
        msg["tool_calls"] = list(ch.tool_calls)
    return msg


def ponder_info(answer: Answer) -> dict[str, Any]:
    c = answer.completion
    return {"model": c.spec, "cost_usd": answer.cost_usd, "cached": c.cached, "saved_usd": c.saved_usd,
            "strategy": answer.strategy,
            "trace": [a.model_dump(exclude={"response"}) for a in answer.trace]}


def _usage(c: Completion) -> dict[str, Any]:
    u = c.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}}


def answer_headers(answer: Answer) -> dict[str, str]:
    return {"x-ponder-model": answer.completion.spec,
            "x-ponder-cost-usd": format(answer.cost_usd, ".10g"),
            "x-ponder-cached": "true" if answer.completion.cached else "false"}


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def completion_response(answer: Answer) -> Response:
    """A ``chat.completion`` body, with the ``x-ponder-*`` headers."""
    c = answer.completion
    payload = {
        "id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()),
        "model": c.spec,
        "choices": [{"index": i, "message": _message(ch), "logprobs": ch.logprobs,
                     "finish_reason": _finish(ch.finish_reason or c.finish_reason)}
                    for i, ch in enumerate(c.answers())],
        "usage": _usage(c), "ponder": ponder_info(answer),
    }
    return Response(_json(payload), media_type="application/json", headers=answer_headers(answer))


class Chunks:
    """The ``data:`` lines of one streamed answer (``chat.completion.chunk`` objects)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())

    def chunk(self, delta: dict[str, Any], finish: str | None = None, index: int = 0,
              logprobs: dict[str, Any] | None = None, **extra: Any) -> str:
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return self.data({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                          "model": self.model, "choices": [choice], **extra})

    def rest(self, answer: Answer, include_usage: bool) -> Iterator[str]:
        """After choice 0's text: tool calls, the other choices whole, each choice's finish (choice
        0's last, with the ``ponder`` field), the usage when asked for, and ``[DONE]``."""
        c = answer.completion
        answers = c.answers()
        for i, ch in enumerate(answers):
            if i:
                yield self.chunk({"role": "assistant", "content": ch.content if ch.content else
                                  (None if ch.tool_calls else "")}, index=i)
            if ch.tool_calls:
                yield self.chunk({"tool_calls": [{"index": j, **call} for j, call in enumerate(ch.tool_calls)]},
                                 index=i)
            if ch.refusal is not None:
                yield self.chunk({"refusal": ch.refusal}, index=i)
        for i, ch in enumerate(answers[1:], start=1):
            yield self.chunk({}, _finish(ch.finish_reason or c.finish_reason), index=i, logprobs=ch.logprobs)
        yield self.chunk({}, _finish(answers[0].finish_reason or c.finish_reason),
                         logprobs=answers[0].logprobs, ponder=ponder_info(answer))
        if include_usage:
            yield self.data({"id": self.id, "object": "chat.completion.chunk",
                             "created": self.created, "model": self.model, "choices": [],
                             "usage": _usage(c)})
        yield "data: [DONE]\n\n"

    @staticmethod
    def data(obj: Any) -> str:
        return "data: " + _json(obj) + "\n\n"


def error_json(message: str, type_: str, code: str | None = None, param: str | None = None
               ) -> dict[str, Any]:
    """An OpenAI-style error. Every error the server sends passes here, so every one is scrubbed."""
    return {"error": {"message": scrub(message), "type": type_,
                      "param": scrub(param) if param else param, "code": code}}


def error_body(status: int, message: str, type_: str, code: str | None = None,
               param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_json(message, type_, code, param), status_code=status, headers=headers)


def too_many(what: str, count: int, limit: int) -> JSONResponse:
    """OpenAI's answer to an over-long ``messages`` array (400 ``array_above_max_length``)."""
    return error_body(400, f"Invalid 'messages': {count} {what}, but this server accepts at most {limit} "
                      "per request (ponder serve --max-messages)",
                      "invalid_request_error", "array_above_max_length", "messages")


def count_items(raw: bytes, limit: int) -> tuple[str, int] | None:
    """``(what, count)`` when a chat body holds more than ``limit`` messages or content parts in
    all, else None. Each is a JSON object, so at most ``limit + 1`` ``{`` needs no parsing; else
    a plain ``json.loads`` counts, before validation would build a model for each item."""
    if raw.count(b"{") <= limit + 1:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list):
        return None
    if len(messages) > limit:
        return "messages", len(messages)
    parts = sum(len(m["content"]) for m in messages
                if isinstance(m, dict) and isinstance(m.get("content"), list))
    return ("content parts", parts) if parts > limit else None


_STATUS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int, str, str], ...] = (
    (RateLimited, 429, "rate_limit_error", "rate_limit_exceeded"),  # first two: AllModelsFailed
    (ProviderTimeout, 504, "upstream_error", "upstream_timeout"),
    (ContextTooLong, 400, "invalid_request_error", "context_length_exceeded"),
    (AuthError, 502, "upstream_error", "upstream_auth_failed"),
    (ProviderError, 502, "upstream_error", "upstream_failed"),
    ((UnknownModel, UnknownProvider), 404, "invalid_request_error", "model_not_found"),
    (BudgetExceeded, 402, "budget_error", "budget_exceeded"),
)


def error_status(exc: Exception) -> tuple[int, str, str]:
    """(HTTP status, OpenAI error type, code) for an error raised while answering."""
    if _unsupported(exc) is not None:
        return 400, "invalid_request_error", "unsupported_parameter"
    if isinstance(exc, AllModelsFailed):  # a rate limit or timeout on every rung: its status
        kind = exc.uniform
        status, type_ = next(((s, t) for cls, s, t, _ in _STATUS[:2]
                              if kind is not None and issubclass(kind, cls)), (502, "upstream_error"))
        return status, type_, "all_models_failed"
    return next(((s, t, c) for cls, s, t, c in _STATUS if isinstance(exc, cls)),
                (500, "server_error", "internal_error"))


def _unsupported(exc: Exception) -> UnsupportedRequest | None:
    """The refusal behind ``exc`` when no model could serve the request as sent (a 400 that
    names the field), else None."""
    if isinstance(exc, UnsupportedRequest):
        return exc
    if isinstance(exc, AllModelsFailed) and exc.errors and all(
            isinstance(e, UnsupportedRequest) for _, e in exc.errors):
        return exc.errors[0][1]  # type: ignore[return-value]
    return None


def exception_response(exc: Exception) -> JSONResponse:
    status, type_, code = error_status(exc)
    refused = _unsupported(exc)
    if refused is not None:
        return error_body(400, str(exc), type_, code, refused.param)
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if status == 429 and isinstance(exc, AllModelsFailed):
        waits = [getattr(e, "retry_after", None) for _, e in exc.errors]
        retry_after = min((w for w in waits if w is not None), default=None)
    if status == 429 and retry_after is not None:
        headers["retry-after"] = f"{max(0.0, float(retry_after)):.3g}"
    message = str(exc) if status != 500 else "internal server error"
    return error_body(status, message, type_, code, getattr(exc, "param", None), headers)


def invalid_body(errors: Sequence[Any]) -> JSONResponse:
    """A 400 naming the first offending field (``messages.0.role``), never echoing the input."""
    first: dict[str, Any] = dict(errors[0]) if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    ctx: dict[str, Any] = first.get("ctx") or {}
    if first.get("type") == "too_long" and loc == ["messages"] and "max_length" in ctx:
        return too_many("messages", int(ctx.get("actual_length", 0)), int(ctx["max_length"]))
    param = ".".join(loc) or None
    msg = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return error_body(400, msg, "invalid_request_error", "invalid_request", param)


def parse_chat(raw: bytes, content_type: bytes, model: type[ChatCompletionRequest],
               max_messages: int) -> ChatCompletionRequest | JSONResponse:
    """The validated chat body, or the 400 that says what is wrong with it (FastAPI's checks)."""
    media = content_type.split(b";", 1)[0].strip().lower()
    if media != b"application/json" and not (media.startswith(b"application/")
                                             and media.endswith(b"+json")):
        return error_body(400, "Content-Type must be application/json", "invalid_request_error",
                          "invalid_request")
    over = count_items(raw, max_messages)
    if over is not None:
        return too_many(*over, max_messages)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        return invalid_body(exc.errors(include_url=False, include_input=False))


def one_line(exc: BaseException) -> str:
    """An error for a log line: one line, scrubbed (a foreign exception's text may quote a key)."""
    return scrub(" ".join(f"{type(exc).__name__}: {exc}".split()))[:500]
