"""Error bodies in OpenAI's shape (every one scrubbed), and the HTTP status of each ponder error."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse
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
from ._schemas import ChatCompletionRequest


def error_body(status: int, message: str, type_: str, code: str | None = None,
               param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-style error. Every error the app builds passes here, so every one is scrubbed."""
    return JSONResponse({"error": {"message": scrub(message), "type": type_,
                                   "param": scrub(param) if param else param, "code": code}},
                        status_code=status, headers=headers)


def too_many(what: str, count: int, limit: int) -> JSONResponse:
    """OpenAI's answer to an over-long ``messages`` array (400 ``array_above_max_length``)."""
    return error_body(400, f"Invalid 'messages': {count} {what}, but this server accepts at most {limit} "
                      "per request (ponder serve --max-messages)",
                      "invalid_request_error", "array_above_max_length", "messages")


def count_items(raw: bytes, limit: int) -> tuple[str, int] | None:
    """``(what, count)`` when a chat body holds more than ``limit`` messages or content parts in
    all, else None (also when it is not JSON: validation says why).

    Cheap on the common path: every message and content part is a JSON object, so a body with at
    most ``limit + 1`` ``{`` (one is the body itself) is within the limit without parsing it.
    Otherwise one plain ``json.loads`` (C, no models) counts exactly, so an over-long body is
    refused before validation builds a model for each item.
    """
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


def _one_line(exc: BaseException) -> str:
    """An error for a log line: one line, scrubbed (a foreign exception's text may quote a key)."""
    return scrub(" ".join(f"{type(exc).__name__}: {exc}".split()))[:500]
