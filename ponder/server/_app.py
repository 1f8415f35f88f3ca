"""The OpenAI-compatible routing server: one FastAPI app over a ``Client`` and named strategies.

Clients change only their ``base_url``. A request's ``model`` names a strategy (``ponder/<name>``)
or a plain model; the answer carries the model that answered and what it cost, in the
``x-ponder-model`` / ``x-ponder-cost-usd`` headers and in a ``ponder`` field of the body.

Work per request is bounded before anything is built: a body of at most ``max_body_bytes`` and
at most ``max_messages`` messages (and as many content parts in all), so one request cannot hold
the event loop that every other request (``/healthz`` included) shares. Every error body and log
line goes through ``scrub``, so no fragment of a registered key (the server's own token, a
provider's key) leaves the server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from .._client import Client
from .._config import Config
from .._exceptions import AllModelsFailed, ProviderError, UnknownModel
from .._secrets import register_secret, scrub
from .._types import Answer
from ..strategies import Chosen, StreamEvent, resolve
from ..strategies._protocol import aclose
from ._answers import Chunks, _headers, completion_response
from ._errors import (
    _one_line,
    error_body,
    error_status,
    exception_response,
    invalid_body,
    parse_chat,
)
from ._guard import CHAT_PATH, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_MESSAGES, Guard
from ._metrics import Metrics, Served
from ._routes import (
    Route,
    accepted_names,
    build_routes,
    request_model,
    resolve_route,
    to_chat_request,
    warm_providers,
)
from ._schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ErrorBody,
    Health,
    ModelCard,
    ModelList,
)

log = logging.getLogger("ponder.server")


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
        body = parse_chat(raw, content_type, self.body_model, self.max_messages)
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
            await aclose(events)
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
            for line in chunks.rest(answer, include_usage):
                yield line
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
        await aclose(self.body_iterator)
        await aclose(self.events)


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
