"""The OpenAI-compatible routing server: one FastAPI app over a ``Client`` and named strategies.

A request's ``model`` names a strategy (``ponder/<name>``) or a plain model; the answer carries
who answered and what it cost (``x-ponder-*`` headers, a ``ponder`` body field). Work per request
is bounded before anything is built (body size, messages and content parts), so one request
cannot hold the event loop every other request shares; every error body and log line is scrubbed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from .._client import Client
from .._config import Config
from .._exceptions import AllModelsFailed, ProviderError, UnknownModel
from .._secrets import register_secret
from .._types import Answer, ChatRequest
from ..strategies import LiveStrategy, SingleModel, StreamEvent, as_live, resolve
from ..strategies._protocol import aclose, first_chosen
from . import _wire as wire
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
HEALTH_PATH = "/healthz"  # the one path open when the server has an API key
STRATEGY_PREFIX = "ponder/"


# --- the routing table -------------------------------------------------------------------------
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
    plain = [*models, *(str(m) for route in routes.values() for m in route.strategy.models)]
    for name, spec in [*config.models.items(), *((spec, spec) for spec in plain)]:
        routes.setdefault(name, Route(name, SingleModel(spec), spec.partition(":")[0]))
    return routes


def find_route(routes: Mapping[str, Route], model: str) -> Route | None:
    route = routes.get(model) or routes.get(STRATEGY_PREFIX + model)
    if route is None:  # a bare model name that matches exactly one served provider:model
        matches = [r for r in routes.values() if ":" in r.id and r.id.partition(":")[2] == model]
        route = matches[0] if len(matches) == 1 else None
    return route


def resolve_route(routes: Mapping[str, Route], model: str) -> Route:
    route = find_route(routes, model)
    if route is None:
        shown = ", ".join(sorted(routes)[:20])
        raise UnknownModel(f"model {model[:100]!r} is not served here; available: {shown}")
    return route


def warm_providers(client: Client, routes: Mapping[str, Route]) -> None:
    """Build every served provider and its SDK client at startup (in a worker thread), or the
    first request to each would import its SDK on the event loop while every other one waits.
    A provider with ``preload`` (``local:``) loads each served model now; one that cannot be
    built is left for the first request to report."""
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
            log.debug("provider %s not built at startup: %s", name, wire.one_line(exc))


# --- the request path --------------------------------------------------------------------------
class ChatEndpoint:
    """POST /v1/chat/completions, streaming included: raw body → checks → route →
    ``strategy.arun`` (one JSON body) or ``strategy.astream`` (server-sent events), all of it (a
    stream's last byte included) inside ``metrics.request()``."""

    def __init__(self, client: Client, routes: Mapping[str, Route], metrics: Metrics,
                 max_messages: int) -> None:
        self.client, self.routes, self.metrics = client, routes, metrics
        self.max_messages = max_messages
        # the request schema with this server's message limit (so /openapi.json states it too)
        self.body_model: type[ChatCompletionRequest] = create_model(
            "ChatCompletionRequest", __base__=ChatCompletionRequest, __module__=__name__,
            messages=(list[ChatMessageIn], Field(min_length=1, max_length=max_messages)))

    async def __call__(self, raw: bytes, content_type: bytes, scope: Scope, receive: Receive,
                       send: Send) -> None:
        body = wire.parse_chat(raw, content_type, self.body_model, self.max_messages)
        if isinstance(body, Response):
            await body(scope, receive, send)
        else:
            await self.serve(body, scope, receive, send)

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
            # the request exactly as the client sent it, less the route and how ponder answers
            request = ChatRequest.model_validate(body.model_dump(
                exclude_unset=True, by_alias=True, exclude={"model", "stream", "stream_options"}))
            if body.stream:
                return await self.stream(route.strategy.astream(request, self.client), body, served)
            answer = await route.strategy.arun(request, self.client)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-style body
            if isinstance(exc, AllModelsFailed):
                self.metrics.failed_calls([m for m, _ in exc.errors])
            elif isinstance(exc, ProviderError) and exc.provider and exc.model:
                self.metrics.failed_calls([f"{exc.provider}:{exc.model}"])
            response = wire.exception_response(exc)
            if response.status_code >= 500:
                log.warning("request for %s failed: %s", served.route, wire.one_line(exc))
            served.status = response.status_code
            return response
        self.metrics.answer(answer)
        served.status = 200
        return wire.completion_response(answer)

    async def stream(self, events: AsyncIterator[StreamEvent], body: ChatCompletionRequest,
                     served: Served) -> Response:
        """Wait for the strategy's :class:`Chosen` (a failure before it is an ordinary error
        response), then stream the rest as server-sent events."""
        chosen = await first_chosen(events)
        headers = {"x-ponder-model": chosen.model, "cache-control": "no-cache"}
        if chosen.answer is not None:  # answered before streaming: its cost is known already
            headers.update(wire.answer_headers(chosen.answer))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(self.sse(chosen.model, events, include_usage, served), events, headers)

    async def sse(self, model: str, events: AsyncIterator[StreamEvent], include_usage: bool,
                  served: Served) -> AsyncIterator[str]:
        chunks = wire.Chunks(model)
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
            for line in chunks.rest(answer, include_usage):
                yield line
        except Exception as exc:  # noqa: BLE001 - after the headers, errors go in the stream
            status, type_, code = wire.error_status(exc)
            served.status = status
            log.warning("stream for %s failed: %s", served.route, wire.one_line(exc))
            yield wire.Chunks.data(wire.error_json(
                str(exc) if status != 500 else "internal server error", type_, code))


class EventStream(StreamingResponse):
    """Server-sent events written from a strategy's stream; ``aclose`` closes both, however far
    they got (a client may leave before the first chunk or midway)."""

    def __init__(self, body: AsyncIterator[str], events: AsyncIterator[StreamEvent],
                 headers: dict[str, str]) -> None:
        super().__init__(body, media_type="text/event-stream", headers=headers)
        self.events = events

    async def aclose(self) -> None:
        await aclose(self.body_iterator)
        await aclose(self.events)


class _Handoff(Response):
    """What the FastAPI route returns: the ASGI call handed to :meth:`ChatEndpoint.serve`."""

    def __init__(self, serve: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        super().__init__()
        self.serve = serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send)


class Guard:
    """Bearer-token auth (every path but ``/healthz``: ``/openapi.json`` lists every served model)
    and a body-size limit in front of the app, as pure ASGI; the chat path goes straight to
    :class:`ChatEndpoint` (FastAPI's route for it stays, for the OpenAPI schema)."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int,
                 chat: Callable[[bytes, bytes, Scope, Receive, Send], Awaitable[None]] | None = None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.chat = chat  # the hot path, served without the framework's routing stack
        self.too_large = wire.error_body(413, f"request body larger than {max_body_bytes} bytes",
                                         "invalid_request_error", "request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.api_key is not None and scope["path"] != HEALTH_PATH:
            auth = headers.get(b"authorization", b"")
            token = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self.api_key):  # OpenAI's words, for the clients
                await wire.error_body(401, "Incorrect API key provided. Send 'Authorization: Bearer "
                                      "<key>' with this ponder server's key (ponder serve --api-key).",
                                      "invalid_request_error", "invalid_api_key",
                                      headers={"www-authenticate": "Bearer"})(scope, receive, send)
                return
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        chunks: list[bytes] = []
        size = 0
        while max(declared, size) <= self.max_body_bytes:  # read the body, up to the limit
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if not message.get("more_body", False):
                break
        if max(declared, size) > self.max_body_bytes:
            await self.too_large(scope, receive, send)
            return
        body = b"".join(chunks)
        if self.chat is not None and scope["path"] == CHAT_PATH and scope["method"] == "POST":
            await self.chat(body, headers.get(b"content-type", b""), scope, receive, send)
            return
        replayed = False

        async def replay() -> ASGIMessage:  # the body read above, then the client's messages
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


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
    """Build the ASGI app over ``source`` (a Config or its path, or a Client left open for its
    owner): ``strategies`` (name -> live strategy or file; default the config's) and ``models``
    served; ``api_key`` a bearer token needed on every path but /healthz (/docs then off)."""
    if max_messages < 1:
        raise ValueError(f"max_messages must be >= 1, got {max_messages}")
    register_secret(api_key)
    owned = not isinstance(source, Client)
    client = source if isinstance(source, Client) else Client(source, base_urls=base_urls)
    if strategies is None:
        base = Path(client.config.source).parent if client.config.source else Path(".")
        strategies = {name: base / st.path for name, st in client.config.strategies.items()}
    loaded = {name: resolve(s, client.config, allow_outside=allow_outside) for name, s in strategies.items()}
    chat = ChatEndpoint(client, build_routes(client.config, loaded, models), Metrics(), max_messages)
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

    @app.exception_handler(RequestValidationError)  # framework errors, in OpenAI's shape
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return wire.invalid_body(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return wire.error_body(exc.status_code, str(exc.detail), "invalid_request_error",
                               headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s", type(exc).__name__)
        return wire.error_body(500, "internal server error", "server_error", "internal_error")

    app.openapi = partial(_openapi, app, routes)  # type: ignore[method-assign]
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
            return wire.error_body(404, str(exc), "invalid_request_error", "model_not_found", "model")

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


def _openapi(app: FastAPI, routes: Mapping[str, Route]) -> dict[str, Any]:
    """The schema, with ``model`` narrowed to the names this server resolves (ids, strategy
    names, unique bare model names)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        names = {*routes, *(r.removeprefix(STRATEGY_PREFIX) for r in routes),
                 *(r.partition(":")[2] for r in routes if ":" in r)}
        props = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
        props["model"]["enum"] = sorted(n for n in names if find_route(routes, n) is not None)
        app.openapi_schema = schema
    return app.openapi_schema
