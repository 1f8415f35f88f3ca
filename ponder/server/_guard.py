"""The Guard: bearer auth and a body-size limit in front of the app, as pure ASGI; it hands the
hot path (POST /v1/chat/completions) straight to the chat endpoint."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from ._errors import error_body

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_MESSAGES = 2048  # OpenAI's own limit on the messages array
CHAT_PATH = "/v1/chat/completions"

HEALTH_PATH = "/healthz"  # the one path open when the server has an API key


class Guard:
    """Bearer-token auth and a request-size limit in front of the app, and the chat path handed
    straight to :class:`ChatEndpoint` (FastAPI's route for it stays, for the OpenAPI schema).

    With an API key every path but ``/healthz`` needs it: ``/openapi.json`` lists every served
    model, as ``/v1/models`` does.
    """

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int,
                 chat: Callable[[bytes, bytes, Scope, Receive, Send], Awaitable[None]] | None = None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.chat = chat  # the hot path, served without the framework's routing stack
        self.too_large = error_body(413, f"request body larger than {max_body_bytes} bytes",
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
                await error_body(401, "Incorrect API key provided. Send 'Authorization: Bearer "
                                 "<key>' with this ponder server's key (ponder serve --api-key).",
                                 "invalid_request_error", "invalid_api_key",
                                 headers={"www-authenticate": "Bearer"})(scope, receive, send)
                return
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_body_bytes:
            await self.too_large(scope, receive, send)
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
                    await self.too_large(scope, receive, send)
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
                await self.too_large(scope, receive, send)

        await self.app(scope, limited_receive, guarded_send)
