"""The one place where SDK and transport exceptions become ponder's own errors."""

from __future__ import annotations

import datetime as dt
import json
from email.utils import parsedate_to_datetime
from typing import Any

from .._exceptions import (
    AuthError,
    BadResponse,
    ContextTooLong,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from .._secrets import scrub

_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window",
                    "prompt is too long", "too many tokens", "context length")


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None) or {}
    for name in ("retry-after-ms", "retry-after"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
                seconds = (when - dt.datetime.now(when.tzinfo)).total_seconds()
            except (TypeError, ValueError):
                continue
        return max(0.0, seconds / 1000.0 if name.endswith("-ms") else seconds)
    return None


def _short(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    msg = None
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message")
    msg = msg or str(exc) or type(exc).__name__
    return " ".join(str(msg).split())[:300]


def translate_sdk_error(exc: Exception, *, provider: str, model: str) -> ProviderError:
    """An ``openai``/``anthropic``/``httpx`` exception as a ponder error (server text scrubbed)."""
    name = type(exc).__name__
    # httpx and the SDKs' vendored httpx2 share class names, not classes
    bases = {c.__name__ for c in type(exc).__mro__}
    status = getattr(exc, "status_code", None)
    msg = scrub(_short(exc))
    kw = {"provider": provider, "model": model}
    if name == "APITimeoutError" or "TimeoutException" in bases:
        return ProviderTimeout("request timed out", **kw)
    if name == "APIConnectionError" or "TransportError" in bases:
        return ProviderUnavailable(f"cannot connect: {msg}", **kw)
    if name == "APIResponseValidationError" or isinstance(exc, (json.JSONDecodeError, ValueError)):
        return BadResponse(f"malformed response: {msg}", **kw)
    if status in (401, 403):
        return AuthError(f"authentication failed (HTTP {status}): check the API key", **kw)
    if status == 429:
        return RateLimited(f"rate limited (HTTP 429): {msg}", retry_after=_retry_after(getattr(exc, "response", None)), **kw)
    if status == 413 or (status in (400, 422) and any(m in msg.lower() for m in _CONTEXT_MARKERS)):
        return ContextTooLong(f"prompt too long for the model: {msg}", **kw)
    if status is not None and (status >= 500 or status == 408 or status == 529):
        return ProviderUnavailable(f"server error (HTTP {status}): {msg}", **kw)
    if status == 404:
        return ProviderError(f"not found (HTTP 404): {msg}", **kw)
    if status is not None:
        return ProviderError(f"request rejected (HTTP {status}): {msg}", **kw)
    return BadResponse(f"{name}: {msg}", **kw)
