"""The OpenAI-compatible routing server: one FastAPI app over a ``Client`` and named strategies.

Clients change only their ``base_url``. A request's ``model`` names a strategy (``ponder/<name>``)
or a plain model; the answer carries the model that answered and what it cost, in the
``x-ponder-model`` / ``x-ponder-cost-usd`` headers and in a ``ponder`` field of the body.

Work per request is bounded before anything is built: a body of at most ``max_body_bytes`` and
at most ``max_messages`` messages (and as many content parts in all), so one request cannot hold
the event loop that every other request (``/healthz`` included) shares. Every error body and log
line goes through ``scrub``, so no fragment of a registered key (the server's own token, a
provider's key) leaves the server.

Reading order: the error bodies; :class:`Guard` (auth, size, and the hot path); the routing
table (model name → :class:`Route` → a live strategy); the answer as OpenAI JSON or chunks;
:class:`ChatEndpoint`, the one request path; :func:`create_app`, which wires them together.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import Field, ValidationError, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from .._client import Client
from .._config import Config
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
from .._secrets import register_secret, scrub
from .._types import Answer, ChatRequest, Choice, Completion
from ..strategies import Chosen, LiveStrategy, SingleModel, StreamEvent, as_live, resolve
from ._metrics import Metrics, Served
from ._schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageIn,
    ErrorBody,
    Health,
    ModelCard,
    ModelList,
)

log = logging.getLogger("ponder.server")

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_MESSAGES = 2048  # OpenAI's own limit on the messages array
CHAT_PATH = "/v1/chat/completions"
STRATEGY_PREFIX = "ponder/"
HEALTH_PATH = "/healthz"  # the one path open when the server has an API key


# --- errors ------------------------------------------------------------------------------------
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


def error_status(exc: Exception) -> tuple[int, str, str]:
    """(HTTP status, OpenAI error type, code) for an error raised while answering."""
    if _unsupported(exc) is not None:
        return 400, "invalid_request_error", "unsupported_parameter"
    if isinstance(exc, AllModelsFailed):
        kind = exc.uniform
        if kind is not None and issubclass(kind, RateLimited):
            return 429, "rate_limit_error", "all_models_failed"
        if kind is not None and issubclass(kind, ProviderTimeout):
            return 504, "upstream_error", "all_models_failed"
        return 502, "upstream_error", "all_models_failed"
    if isinstance(exc, RateLimited):
        return 429, "rate_limit_error", "rate_limit_exceeded"
    if isinstance(exc, ProviderTimeout):
        return 504, "upstream_error", "upstream_timeout"
    if isinstance(exc, ContextTooLong):
        return 400, "invalid_request_error", "context_length_exceeded"
    if isinstance(exc, AuthError):
        return 502, "upstream_error", "upstream_auth_failed"
    if isinstance(exc, ProviderError):
        return 502, "upstream_error", "upstream_failed"
    if isinstance(exc, (UnknownModel, UnknownProvider)):
        return 404, "invalid_request_error", "model_not_found"
    if isinstance(exc, BudgetExceeded):
        return 402, "budget_error", "budget_exceeded"
    return 500, "server_error", "internal_error"


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


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


# --- guard: auth and body size, as pure ASGI (no per-request task overhead) --------------------
class Guard:
    """Bearer-token auth and a request-size limit in front of the app; it also hands the hot
    path (POST /v1/chat/completions) straight to :class:`ChatEndpoint`, skipping the framework's
    routing stack (FastAPI's route for that path stays for the OpenAPI schema, and serves the
    same way).

    With an API key every path but ``/healthz`` needs it: ``/openapi.json`` lists every served
    model, as ``/v1/models`` does.
    """

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int,
                 chat: Callable[[bytes, bytes, Scope, Receive, Send], Awaitable[None]] | None = None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.chat = chat  # the hot path, served without the framework's routing stack

    async def _reject(self, send: Send, status: int, body: dict[str, Any],
                      extra: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
        raw = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(raw)).encode()), *extra]})
        await send({"type": "http.response.body", "body": raw})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.api_key is not None and scope["path"] != HEALTH_PATH:
            auth = headers.get(b"authorization", b"")
            token = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self.api_key):
                await self._reject(send, 401, {"error": {  # OpenAI's words, so that clients classify it
                    "message": "Incorrect API key provided. Send 'Authorization: Bearer <key>' with "
                               "this ponder server's key (ponder serve --api-key).",
                    "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
                    [(b"www-authenticate", b"Bearer")])
                return
        too_large = {"error": {"message": f"request body larger than {self.max_body_bytes} bytes",
                               "type": "invalid_request_error", "param": None,
                               "code": "request_too_large"}}
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_body_bytes:
            await self._reject(send, 413, too_large)
            return
        if self.chat is not None and scope["path"] == CHAT_PATH and scope["method"] == "POST":
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    await self._reject(send, 413, too_large)
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            await self.chat(b"".join(chunks), headers.get(b"content-type", b""), scope, receive, send)
            return
        seen = 0
        over = False

        async def limited_receive() -> ASGIMessage:
            nonlocal seen, over
            if over:  # stop feeding the app; it answers with some error, replaced below
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: ASGIMessage) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._reject(send, 413, too_large)

        await self.app(scope, limited_receive, guarded_send)


# --- routing table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """A served model id and the live strategy that answers it."""

    id: str
    strategy: LiveStrategy
    owned_by: str


def build_routes(config: Config, strategies: Mapping[str, Any], models: Sequence[str]) -> dict[str, Route]:
    """``ponder/<name>`` for each strategy; every model a strategy may call, each config alias
    and each of ``models`` as a single-model route of its own."""
    routes: dict[str, Route] = {}
    for name, strategy in strategies.items():
        rid = name if name.startswith(STRATEGY_PREFIX) else STRATEGY_PREFIX + name
        routes[rid] = Route(rid, as_live(strategy), "ponder")
    plain: list[str] = list(models)
    for route in list(routes.values()):
        plain += [str(m) for m in route.strategy.models]
    for alias, spec in config.models.items():
        routes.setdefault(alias, Route(alias, SingleModel(spec), spec.partition(":")[0]))
    for spec in plain:
        routes.setdefault(spec, Route(spec, SingleModel(spec), spec.partition(":")[0]))
    return routes


def resolve_route(routes: Mapping[str, Route], model: str) -> Route:
    route = routes.get(model) or routes.get(STRATEGY_PREFIX + model)
    if route is None:  # a bare model name that matches exactly one served provider:model
        matches = [r for r in routes.values() if ":" in r.id and r.id.partition(":")[2] == model]
        if len(matches) == 1:
            route = matches[0]
    if route is None:
        shown = ", ".join(sorted(routes)[:20])
        raise UnknownModel(f"model {model[:100]!r} is not served here; available: {shown}")
    return route


def accepted_names(routes: Mapping[str, Route]) -> list[str]:
    """Every ``model`` value the server resolves (ids, strategy names, unique bare model names)."""
    names = set(routes)
    names |= {r[len(STRATEGY_PREFIX):] for r in routes if r.startswith(STRATEGY_PREFIX)}
    bare = [r.partition(":")[2] for r in routes if ":" in r]
    names |= {b for b in bare if bare.count(b) == 1}
    return sorted(n for n in names if _resolves(routes, n))


def _resolves(routes: Mapping[str, Route], name: str) -> bool:
    try:
        resolve_route(routes, name)
    except UnknownModel:
        return False
    return True


def request_model(max_messages: int) -> type[ChatCompletionRequest]:
    """The request schema with this server's message limit (so /openapi.json states it too)."""
    model: type[ChatCompletionRequest] = create_model(
        "ChatCompletionRequest", __base__=ChatCompletionRequest, __module__=__name__,
        messages=(list[ChatMessageIn], Field(min_length=1, max_length=max_messages)))
    return model


def warm_providers(client: Client, routes: Mapping[str, Route]) -> None:
    """Build every served provider and its SDK client now (in a worker thread, at startup).

    Otherwise the first request to each provider imports its SDK (a second or more for
    ``openai``) on the event loop, and every request in flight waits. Building a provider also
    registers its key for scrubbing. A provider that cannot be built is left for the first
    request to report. A provider with ``preload`` (``local:``) loads each served model now, so
    no request waits for (or times out on) a load.
    """
    specs: set[tuple[str, str]] = set()
    for route in routes.values():
        for spec in route.strategy.models:
            try:
                resolved = client.resolve(spec)
            except Exception:  # noqa: BLE001 - reported by the request that uses it
                continue
            specs.add((resolved.provider, resolved.model))
    for name in sorted({p for p, _ in specs}):
        try:
            built = client.provider(name)
            provider = getattr(built, "provider", built)  # under a CachedProvider
            getattr(provider, "aclient", None)  # the SDK import
            for model in sorted(m for p, m in specs if p == name and hasattr(provider, "preload")):
                provider.preload(model)
        except Exception as exc:  # noqa: BLE001
            log.debug("provider %s not built at startup: %s", name, _one_line(exc))


_NOT_FORWARDED = {"model", "stream", "stream_options"}  # the route, and how ponder answers


def to_chat_request(body: ChatCompletionRequest) -> ChatRequest:
    """The request exactly as the client sent it: every field it set, none it did not."""
    return ChatRequest.model_validate(body.model_dump(exclude_unset=True, by_alias=True,
                                                      exclude=_NOT_FORWARDED))


# --- answers as OpenAI bodies: one JSON completion, or server-sent chunks ------------------------
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


def _cost(x: float) -> str:
    return format(x, ".10g")


def _headers(answer: Answer) -> dict[str, str]:
    return {"x-ponder-model": answer.completion.spec, "x-ponder-cost-usd": _cost(answer.cost_usd),
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
    return Response(_json(payload), media_type="application/json", headers=_headers(answer))


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

    def rest(self, c: Completion) -> Iterator[str]:
        """After choice 0's text has streamed: its tool calls (one delta each, with ``index``, id,
        name and the whole arguments), every other choice whole, then each choice's finish."""
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

    def usage(self, c: Completion) -> str:
        return self.data({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                          "model": self.model, "choices": [], "usage": _usage(c)})

    @staticmethod
    def data(obj: Any) -> str:
        return "data: " + _json(obj) + "\n\n"


# --- the request path --------------------------------------------------------------------------
class ChatEndpoint:
    """POST /v1/chat/completions: one request path for every strategy, streaming included.

    raw body → checks (content type, message count, schema) → :meth:`serve`: resolve the route →
    ``strategy.arun`` (one JSON body) or ``strategy.astream`` (server-sent events). Strategies are
    served only through the :class:`~ponder.strategies.LiveStrategy` protocol. The whole request,
    a stream's last byte included, runs inside ``metrics.request()``: the one place that counts a
    request in flight and done.
    """

    def __init__(self, client: Client, routes: Mapping[str, Route], metrics: Metrics,
                 max_messages: int) -> None:
        self.client, self.routes, self.metrics = client, routes, metrics
        self.max_messages = max_messages
        self.body_model = request_model(max_messages)

    async def __call__(self, raw: bytes, content_type: bytes, scope: Scope, receive: Receive,
                       send: Send) -> None:
        """Serve a raw request body (the :class:`Guard`'s hot path)."""
        body = self.parse(raw, content_type)
        if isinstance(body, Response):
            await body(scope, receive, send)
        else:
            await self.serve(body, scope, receive, send)

    def parse(self, raw: bytes, content_type: bytes) -> ChatCompletionRequest | Response:
        """The validated body, or the 400 that says what is wrong with it (same checks as FastAPI's)."""
        if not _is_json(content_type):
            return error_body(400, "Content-Type must be application/json", "invalid_request_error",
                              "invalid_request")
        over = count_items(raw, self.max_messages)
        if over is not None:
            return too_many(*over, self.max_messages)
        try:
            return self.body_model.model_validate_json(raw)
        except ValidationError as exc:
            return invalid_body(exc.errors(include_url=False, include_input=False))

    async def serve(self, body: ChatCompletionRequest, scope: Scope, receive: Receive, send: Send) -> None:
        with self.metrics.request() as served:
            response = await self.respond(body, served)
            try:
                await response(scope, receive, send)
            finally:  # a stream whose client left early: close it (and the model's stream) now
                if isinstance(response, EventStream):
                    await response.aclose()

    async def respond(self, body: ChatCompletionRequest, served: Served) -> Response:
        try:
            route = resolve_route(self.routes, body.model)
            served.route = route.id
            request = to_chat_request(body)
            if body.stream:
                return await self.stream(route.strategy.astream(request, self.client), body, served)
            answer = await route.strategy.arun(request, self.client)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-style body
            response = self.failed(exc, served.route)
            served.status = response.status_code
            return response
        self.metrics.answer(answer)
        served.status = 200
        return completion_response(answer)

    def failed(self, exc: Exception, route: str) -> JSONResponse:
        """The error body for a request that failed before its first byte (models counted too)."""
        if isinstance(exc, AllModelsFailed):
            self.metrics.failed_calls([m for m, _ in exc.errors])
        elif isinstance(exc, ProviderError) and exc.provider and exc.model:
            self.metrics.failed_calls([f"{exc.provider}:{exc.model}"])
        response = exception_response(exc)
        if response.status_code >= 500:
            log.warning("request for %s failed: %s", route, _one_line(exc))
        return response

    async def stream(self, events: AsyncIterator[StreamEvent], body: ChatCompletionRequest,
                     served: Served) -> Response:
        """Wait for the strategy's :class:`Chosen` (a failure before it raises, and becomes an
        ordinary error response), then stream the rest as server-sent events."""
        chosen = await anext(events)
        if not isinstance(chosen, Chosen):
            await _aclose(events)
            raise TypeError(f"a live stream must start with Chosen, got {type(chosen).__name__}")
        headers = {"x-ponder-model": chosen.model, "cache-control": "no-cache"}
        if chosen.answer is not None:  # answered before streaming: its cost is known already
            headers.update(_headers(chosen.answer))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(self.sse(chosen.model, events, include_usage, served), events, headers)

    async def sse(self, model: str, events: AsyncIterator[StreamEvent], include_usage: bool,
                  served: Served) -> AsyncIterator[str]:
        chunks = Chunks(model)
        served.status = 200
        answer: Answer | None = None
        try:
            yield chunks.chunk({"role": "assistant", "content": ""})
            async for event in events:
                if isinstance(event, str):
                    yield chunks.chunk({"content": event})
                elif isinstance(event, Answer):
                    answer = event
            if answer is None:
                raise ProviderError("stream ended without a final answer", provider=model)
            self.metrics.answer(answer)
            c = answer.completion
            for line in chunks.rest(c):
                yield line
            first = c.answers()[0]
            yield chunks.chunk({}, _finish(first.finish_reason or c.finish_reason), logprobs=first.logprobs,
                               ponder=ponder_info(answer))
            if include_usage:
                yield chunks.usage(answer.completion)
            yield "data: [DONE]\n\n"
        except Exception as exc:  # noqa: BLE001 - after the headers, errors go in the stream
            status, type_, code = error_status(exc)
            served.status = status
            log.warning("stream for %s failed: %s", served.route, _one_line(exc))
            yield Chunks.data({"error": {
                "message": scrub(str(exc)) if status != 500 else "internal server error",
                "type": type_, "param": None, "code": code}})


class EventStream(StreamingResponse):
    """Server-sent events written from a strategy's stream."""

    def __init__(self, body: AsyncIterator[str], events: AsyncIterator[StreamEvent],
                 headers: dict[str, str]) -> None:
        super().__init__(body, media_type="text/event-stream", headers=headers)
        self.events = events

    async def aclose(self) -> None:
        """Close both, however far they got (a client may leave before the first chunk or midway)."""
        await _aclose(self.body_iterator)
        await _aclose(self.events)


class _Handoff(Response):
    """What the FastAPI route returns: the ASGI call handed to :meth:`ChatEndpoint.serve`."""

    def __init__(self, serve: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        super().__init__()
        self.serve = serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send)


# --- the app -----------------------------------------------------------------------------------
def create_app(
    source: Config | Client | str | Path | None = None,
    strategies: Mapping[str, Any] | None = None,
    *,
    models: Sequence[str] = (),
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    base_urls: dict[str, str] | None = None,
    allow_outside: bool = False,
) -> Any:
    """Build the ASGI app.

    ``source``: a Config (or config file path) to build a Client from, or a ready Client (left
    open for its owner). ``strategies``: name -> live strategy (a
    :class:`~ponder.strategies.LiveStrategy`, or any object with ``run`` or ``arun``; anything
    else raises TypeError) or strategy-file path; by default the config's ``[strategies.NAME]``. ``models``: plain ``provider:model`` specs to serve as well.
    ``api_key``: require ``Authorization: Bearer <api_key>`` on every path but /healthz (the
    interactive /docs and /redoc are then off; /openapi.json needs the key, as /v1/models does).
    ``max_body_bytes`` / ``max_messages``: the largest chat request accepted (413 / 400); the
    message limit also bounds content parts, counted over all messages. ``allow_outside``: let
    strategy files name model files outside their own folder (see ``ponder.load_strategy``).
    """
    if max_messages < 1:
        raise ValueError(f"max_messages must be >= 1, got {max_messages}")
    register_secret(api_key)
    owned = not isinstance(source, Client)
    client = source if isinstance(source, Client) else Client(source, base_urls=base_urls)
    if strategies is None:
        base = Path(client.config.source).parent if client.config.source else Path(".")
        strategies = {name: base / st.path for name, st in client.config.strategies.items()}
    loaded = {name: resolve(s, client.config, allow_outside=allow_outside) for name, s in strategies.items()}
    routes = build_routes(client.config, loaded, models)
    chat = ChatEndpoint(client, routes, Metrics(), max_messages)
    app = fastapi_app(chat, docs=not api_key, close_client=owned)
    guard = Guard(app, api_key, max_body_bytes, chat=chat)
    guard.state = app.state  # type: ignore[attr-defined]
    guard.fastapi = app  # type: ignore[attr-defined]
    return guard


def fastapi_app(chat: ChatEndpoint, *, docs: bool, close_client: bool) -> FastAPI:
    """The framework app behind the :class:`Guard`: the GET endpoints, the OpenAPI schema, error
    bodies in OpenAI's shape, and the chat route (for the schema; the Guard serves that path)."""
    client, routes, metrics = chat.client, chat.routes, chat.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(warm_providers, client, routes)
        yield
        if close_client:
            await client.aclose()
            if client.cache is not None:
                client.cache.close()

    no_docs: dict[str, Any] = {} if docs else {"docs_url": None, "redoc_url": None}
    app = FastAPI(title="ponder", version="1", lifespan=lifespan, **no_docs,
                  description="OpenAI-compatible routing server: strategies and plain models behind one endpoint.")
    app.state.client, app.state.routes, app.state.metrics = client, routes, metrics
    _openai_errors(app)
    app.openapi = partial(_openapi, app, accepted_names(routes))  # type: ignore[method-assign]
    created = int(time.time())

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": len(routes)}

    def card(r: Route) -> dict[str, Any]:
        return {"id": r.id, "object": "model", "created": created, "owned_by": r.owned_by}

    @app.get("/v1/models", response_model=ModelList, responses=_COMMON)
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [card(r) for r in routes.values()]}

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard,
             responses={**_COMMON, 404: {"model": ErrorBody}})
    async def retrieve_model(model_id: str) -> Any:
        """OpenAI's ``models.retrieve``: the model a chat request naming ``model_id`` would reach
        (the names the chat route accepts), or its 404 ``model_not_found``."""
        try:
            return card(resolve_route(routes, model_id))
        except UnknownModel as exc:
            return error_body(404, str(exc), "invalid_request_error", "model_not_found", "model")

    @app.get("/metrics", response_class=PlainTextResponse, responses=_COMMON)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def chat_completions(body: ChatCompletionRequest) -> Response:
        return _Handoff(partial(chat.serve, body))

    chat_completions.__annotations__["body"] = chat.body_model  # FastAPI validates with the limit
    app.post(CHAT_PATH, responses=_CHAT_RESPONSES, response_model=None)(chat_completions)
    return app


_COMMON: dict[int | str, dict[str, Any]] = {400: {"model": ErrorBody}, 401: {"model": ErrorBody},
                                            413: {"model": ErrorBody}}
_CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ChatCompletionResponse,
          "content": {"text/event-stream": {"schema": {  # one server-sent event
              "type": "object", "required": ["data"],
              "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}}}},
    **_COMMON, 402: {"model": ErrorBody}, 404: {"model": ErrorBody}, 429: {"model": ErrorBody},
    500: {"model": ErrorBody}, 502: {"model": ErrorBody}, 504: {"model": ErrorBody},
}


def _openai_errors(app: FastAPI) -> None:
    """Every error the framework raises, as an OpenAI-style (scrubbed) body."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_body(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_body(exc.status_code, str(exc.detail), "invalid_request_error",
                          headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s", type(exc).__name__)
        return error_body(500, "internal server error", "server_error", "internal_error")


def _openapi(app: FastAPI, names: list[str]) -> dict[str, Any]:
    """The schema, with ``model`` narrowed to the names this server resolves."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        props = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
        props["model"]["enum"] = names
        app.openapi_schema = schema
    return app.openapi_schema


async def _aclose(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def _one_line(exc: BaseException) -> str:
    """An error for a log line: one line, scrubbed (a foreign exception's text may quote a key)."""
    return scrub(" ".join(f"{type(exc).__name__}: {exc}".split()))[:500]
