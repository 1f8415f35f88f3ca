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
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import Field, ValidationError, create_model
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from .._client import Client
from .._config import Config
from .._exceptions import (
    AuthError,
    BudgetExceeded,
    ContextTooLong,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    UnknownModel,
    UnknownProvider,
)
from .._secrets import register_secret, scrub
from .._strategies import SingleModel, load_strategy
from .._types import Answer, Attempt, ChatRequest, Completion, Message
from ._fallback import FALLTHROUGH, AllModelsFailed, FallbackChain, failed_attempt, success_attempt
from ._metrics import Metrics
from ._schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageIn,
    ErrorBody,
    Health,
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


def exception_response(exc: Exception) -> JSONResponse:
    status, type_, code = error_status(exc)
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
    """Bearer-token auth and a request-size limit in front of the app; it also serves the hot
    path (POST /v1/chat/completions) directly, with the same checks as the FastAPI route, which
    stays for the OpenAPI schema.

    With an API key every path but ``/healthz`` needs it: ``/openapi.json`` lists every served
    model, as ``/v1/models`` does.
    """

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int,
                 chat: Callable[[bytes, bytes], Awaitable[Response]] | None = None) -> None:
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
                await self._reject(send, 401, {"error": {
                    "message": "missing or wrong API key: send 'Authorization: Bearer <key>'",
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
            response = await self.chat(b"".join(chunks), headers.get(b"content-type", b""))
            await response(scope, receive, send)
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
    id: str
    strategy: Any
    owned_by: str


def _strategy_models(strategy: Any) -> list[str]:
    return [str(m) for m in getattr(strategy, "models", []) or []]


def build_routes(config: Config, strategies: Mapping[str, Any], models: Sequence[str]) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for name, strategy in strategies.items():
        rid = name if name.startswith(STRATEGY_PREFIX) else STRATEGY_PREFIX + name
        routes[rid] = Route(rid, strategy, "ponder")
    plain: list[str] = list(models)
    for strategy in strategies.values():
        plain += _strategy_models(strategy)
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
    request to report.
    """
    names: set[str] = set()
    for route in routes.values():
        for spec in _strategy_models(route.strategy):
            try:
                names.add(client.resolve(spec).provider)
            except Exception:  # noqa: BLE001 - reported by the request that uses it
                continue
    for name in sorted(names):
        try:
            provider = client.provider(name)
            getattr(getattr(provider, "provider", provider), "aclient", None)  # the SDK import
        except Exception as exc:  # noqa: BLE001
            log.debug("provider %s not built at startup: %s", name, _one_line(exc))


def to_chat_request(body: ChatCompletionRequest) -> ChatRequest:
    messages: list[Message] = []
    for m in body.messages:
        if m.content is None:
            text = ""
        elif isinstance(m.content, str):
            text = m.content
        else:
            parts = [p.text for p in m.content]
            text = "\n".join(parts)
        messages.append(Message(role=m.role, content=text))
    stop = (body.stop,) if isinstance(body.stop, str) else (tuple(body.stop) if body.stop else None)
    return ChatRequest(messages=tuple(messages), temperature=body.temperature or 0.0,
                       max_tokens=body.max_tokens or body.max_completion_tokens, top_p=body.top_p,
                       stop=stop, seed=body.seed)


def stream_chain(strategy: Any, request: ChatRequest) -> list[str] | None:
    """The models to stream from, in order, when the choice can be made before generating.

    A single model or a fallback chain streams directly (the next rung takes over if a rung fails
    before its first token); a router (``kind == "router"`` with ``decide(request) -> (decision,
    spec)``) streams from the model it picks. Anything else (a cascade, route-then-cascade) is
    answered first, then its accepted answer is streamed.
    """
    if isinstance(strategy, FallbackChain):
        return list(strategy.models)
    if isinstance(strategy, SingleModel):
        return [strategy.model]
    decide = getattr(strategy, "decide", None)
    if getattr(strategy, "kind", None) == "router" and callable(decide):
        return [str(decide(request)[1])]
    return None


_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def _finish(c: Completion) -> str:
    return _FINISH.get(c.finish_reason or "stop", c.finish_reason or "stop")


def ponder_info(answer: Answer) -> dict[str, Any]:
    c = answer.completion
    return {"model": c.spec, "cost_usd": answer.cost_usd, "cached": c.cached, "saved_usd": c.saved_usd,
            "strategy": answer.strategy,
            "trace": [a.model_dump(exclude={"response"}) for a in answer.trace]}


def _usage(c: Completion) -> dict[str, int]:
    u = c.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens}


def _cost(x: float) -> str:
    return format(x, ".10g")


def _headers(answer: Answer) -> dict[str, str]:
    return {"x-ponder-model": answer.completion.spec, "x-ponder-cost-usd": _cost(answer.cost_usd),
            "x-ponder-cached": "true" if answer.completion.cached else "false"}


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
    open for its owner). ``strategies``: name -> live strategy or strategy-file path; by default
    the config's ``[strategies.NAME]``. ``models``: plain ``provider:model`` specs to serve as well.
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
    config = client.config
    if strategies is None:
        base = Path(config.source).parent if config.source else Path(".")
        strategies = {name: base / st.path for name, st in config.strategies.items()}
    loaded = {name: (load_strategy(s, allow_outside=allow_outside) if isinstance(s, (str, Path)) else s) for name, s in strategies.items()}
    routes = build_routes(config, loaded, models)
    metrics = Metrics()
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(warm_providers, client, routes)
        yield
        if owned:
            await client.aclose()
            if client.cache is not None:
                client.cache.close()

    docs: dict[str, Any] = {"docs_url": None, "redoc_url": None} if api_key else {}
    app = FastAPI(title="ponder", version="1", lifespan=lifespan, **docs,
                  description="OpenAI-compatible routing server: strategies and plain models behind one endpoint.")
    app.state.client, app.state.routes, app.state.metrics = client, routes, metrics

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

    def openapi() -> dict[str, Any]:
        """The schema, with ``model`` narrowed to the names this server resolves."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            props = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
            props["model"]["enum"] = accepted_names(routes)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    common: dict[int | str, dict[str, Any]] = {400: {"model": ErrorBody}, 401: {"model": ErrorBody},
                                                413: {"model": ErrorBody}}

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": len(routes)}

    @app.get("/v1/models", response_model=ModelList, responses=common)
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": r.id, "object": "model", "created": created,
                                            "owned_by": r.owned_by} for r in routes.values()]}

    @app.get("/metrics", response_class=PlainTextResponse, responses=common)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    responses: dict[int | str, dict[str, Any]] = {
        200: {"model": ChatCompletionResponse,
              "content": {"text/event-stream": {"schema": {  # one server-sent event
                  "type": "object", "required": ["data"],
                  "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}}}},
        **common, 402: {"model": ErrorBody}, 404: {"model": ErrorBody}, 429: {"model": ErrorBody},
        500: {"model": ErrorBody}, 502: {"model": ErrorBody}, 504: {"model": ErrorBody},
    }

    body_model = request_model(max_messages)

    async def chat_raw(raw: bytes, content_type: bytes) -> Response:
        """POST /v1/chat/completions straight from bytes (same checks as the FastAPI route)."""
        if not _is_json(content_type):
            return error_body(400, "Content-Type must be application/json", "invalid_request_error",
                              "invalid_request")
        over = count_items(raw, max_messages)
        if over is not None:
            return too_many(*over, max_messages)
        try:
            body = body_model.model_validate_json(raw)
        except ValidationError as exc:
            return invalid_body(exc.errors(include_url=False, include_input=False))
        return await chat_completions(body)

    async def chat_completions(body: ChatCompletionRequest) -> Response:
        start = time.perf_counter()
        metrics.in_flight += 1
        served = "unknown"
        try:
            route = resolve_route(routes, body.model)
            served = route.id
            request = to_chat_request(body)
            if body.stream:
                return await _stream(route, request, body, start)
            answer = await _answer(route.strategy, request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-style body
            resp = exception_response(exc)
            if isinstance(exc, AllModelsFailed):
                metrics.failed_calls([m for m, _ in exc.errors])
            elif isinstance(exc, ProviderError) and exc.provider and exc.model:
                metrics.failed_calls([f"{exc.provider}:{exc.model}"])
            if resp.status_code >= 500:
                log.warning("request for %s failed: %s", served, _one_line(exc))
            metrics.request_done(served, resp.status_code, time.perf_counter() - start)
            metrics.in_flight -= 1
            return resp
        metrics.answer(answer)
        c = answer.completion
        payload = {
            "id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()),
            "model": c.spec,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                         "finish_reason": _finish(c)}],
            "usage": _usage(c), "ponder": ponder_info(answer),
        }
        metrics.request_done(served, 200, time.perf_counter() - start)
        metrics.in_flight -= 1
        return Response(json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
                        media_type="application/json", headers=_headers(answer))

    chat_completions.__annotations__["body"] = body_model  # FastAPI validates with the limit
    app.post(CHAT_PATH, responses=responses, response_model=None)(chat_completions)

    async def _answer(strategy: Any, request: ChatRequest) -> Answer:
        arun = getattr(strategy, "arun", None)
        if arun is not None:
            return await arun(request, client)  # type: ignore[no-any-return]
        import anyio.to_thread

        return await anyio.to_thread.run_sync(strategy.run, request, client)  # type: ignore[no-any-return]

    async def _stream(route: Route, request: ChatRequest, body: ChatCompletionRequest,
                      start: float) -> Response:
        chain = stream_chain(route.strategy, request)
        failures: list[Attempt] = []
        items: AsyncIterator[str | Completion]
        first: str | Completion
        if chain is None:  # answer first (e.g. a cascade), then stream the accepted answer
            answer = await _answer(route.strategy, request)
            model, first, pre = answer.completion.spec, answer.completion.text, answer

            async def replay() -> AsyncIterator[str | Completion]:
                yield answer.completion

            items = replay()
        else:
            errors: list[tuple[str, Exception]] = []
            for model in chain:
                items = client.astream(request, model=model)
                try:
                    first = await items.__anext__()
                    break
                except FALLTHROUGH as exc:
                    failures.append(failed_attempt(model, exc))
                    errors.append((model, exc))
                    await items.aclose()  # type: ignore[attr-defined]
            else:
                if len(errors) == 1:
                    raise errors[0][1]
                raise AllModelsFailed(errors)
            pre = None
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        sid = "chatcmpl-" + uuid.uuid4().hex
        created_at = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            obj = {"id": sid, "object": "chat.completion.chunk", "created": created_at, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"

        finished = False

        def finish(status: int) -> None:
            nonlocal finished
            if not finished:
                finished = True
                metrics.request_done(route.id, status, time.perf_counter() - start)
                metrics.in_flight -= 1

        async def events() -> AsyncIterator[str]:
            status = 200
            try:
                yield chunk({"role": "assistant", "content": ""})
                completion: Completion | None = None
                item: str | Completion = first
                iterator = items
                while True:
                    if isinstance(item, Completion):
                        completion = item
                    elif item:
                        yield chunk({"content": item})
                    try:
                        item = await iterator.__anext__()
                    except StopAsyncIteration:
                        break
                if completion is None:
                    raise ProviderError("stream ended without a final answer", provider=model)
                answer = pre or Answer(completion=completion,
                                       trace=(*failures, success_attempt(model, completion)),
                                       cost_usd=completion.cost_usd, strategy=route.id)
                metrics.answer(answer)
                yield chunk({}, _finish(completion), ponder=ponder_info(answer))
                if include_usage:
                    obj = {"id": sid, "object": "chat.completion.chunk", "created": created_at,
                           "model": model, "choices": [], "usage": _usage(completion)}
                    yield "data: " + json.dumps(obj, separators=(",", ":")) + "\n\n"
                yield "data: [DONE]\n\n"
            except Exception as exc:  # noqa: BLE001 - after the headers, errors go in the stream
                status, type_, code = error_status(exc)
                log.warning("stream for %s failed: %s", route.id, _one_line(exc))
                err = {"error": {"message": scrub(str(exc)) if status != 500 else "internal server error",
                                 "type": type_, "param": None, "code": code}}
                yield "data: " + json.dumps(err) + "\n\n"
            finally:
                finish(status)

        headers = {"x-ponder-model": model, "cache-control": "no-cache"}
        if pre is not None:
            headers.update(_headers(pre))
        # counted once: when the stream ends, or (client gone before it started) after the response
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers,
                                 background=BackgroundTask(finish, 499))

    guard = Guard(app, api_key, max_body_bytes, chat=chat_raw)
    guard.state = app.state  # type: ignore[attr-defined]
    guard.fastapi = app  # type: ignore[attr-defined]
    return guard


def _one_line(exc: BaseException) -> str:
    """An error for a log line: one line, scrubbed (a foreign exception's text may quote a key)."""
    return scrub(" ".join(f"{type(exc).__name__}: {exc}".split()))[:500]
