"""A real HTTP server on 127.0.0.1 that speaks both the OpenAI and the Anthropic wire formats.

Tests point the official SDKs at it. It can answer normally (echo), stream, and misbehave on
purpose: HTTP errors with Retry-After, slow answers, malformed JSON, dropped connections. Each
request is recorded so tests can count what reached the server.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Action:
    """What the server does with one request. ``kind``: ok | status | slow | malformed | drop."""

    kind: str = "ok"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay_s: float = 0.0
    text: str | None = None


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


class _Handler(BaseHTTPRequestHandler):
    server: FakeLLMServer._HTTP  # type: ignore[name-defined]
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes; don't wait 40 ms for an ACK

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        owner = self.server.owner
        action = owner._next_action(self.path, body, dict(self.headers))
        if action.delay_s:
            time.sleep(action.delay_s)
        if action.kind == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if action.kind == "status":
            self._send_json(action.status, action.body or {"error": {"message": f"HTTP {action.status}", "type": "server_error"}}, action.headers)
            return
        if action.kind == "malformed":
            self._send_json(200, b'{"id": "x", "choices": [ {"message": ')
            return
        anthropic = self.path.rstrip("/").endswith("/messages")
        last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
        content = last.get("content", "")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        text = action.text if action.text is not None else f"echo: {content}"
        prompt_tokens = sum(_tokens(str(m.get("content", ""))) for m in body.get("messages", []))
        out_tokens = _tokens(text)
        model = body.get("model", "fake")
        if body.get("stream"):
            self._stream(anthropic, model, text, prompt_tokens, out_tokens)
        elif anthropic:
            self._send_json(200, {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": out_tokens}})
        else:
            self._send_json(200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": out_tokens,
                          "total_tokens": prompt_tokens + out_tokens}})

    def _stream(self, anthropic: bool, model: str, text: str, pt: int, ot: int) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        pieces = [text[i:i + 4] for i in range(0, len(text), 4)] or [""]

        def emit(event: str | None, data: Any) -> None:
            chunk = (f"event: {event}\n" if event else "") + f"data: {json.dumps(data) if not isinstance(data, str) else data}\n\n"
            self.wfile.write(chunk.encode())
            self.wfile.flush()

        if anthropic:
            emit("message_start", {"type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": pt, "output_tokens": 0}}})
            emit("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}})
            for p in pieces:
                emit("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": p}})
            emit("content_block_stop", {"type": "content_block_stop", "index": 0})
            emit("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                   "usage": {"output_tokens": ot}})
            emit("message_stop", {"type": "message_stop"})
        else:
            base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
            for i, p in enumerate(pieces):
                delta = {"content": p} if i else {"role": "assistant", "content": p}
                emit(None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            emit(None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            emit(None, {**base, "choices": [], "usage": {"prompt_tokens": pt, "completion_tokens": ot, "total_tokens": pt + ot}})
            emit(None, "[DONE]")


class FakeLLMServer:
    """Start with ``with FakeLLMServer() as srv:``; ``srv.url`` is the OpenAI base URL (…/v1)."""

    class _HTTP(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 512  # bursts of concurrent clients must not be dropped by the backlog
        owner: FakeLLMServer

    def __init__(self) -> None:
        self.actions: deque[Action] = deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.default = Action()
        self._httpd = self._HTTP(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/v1"

    def queue(self, *actions: Action) -> None:
        with self._lock:
            self.actions.extend(actions)

    def _next_action(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Action:
        with self._lock:
            self.requests.append({"path": path, "body": body, "headers": headers})
            return self.actions.popleft() if self.actions else self.default

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# --- Appended helpers (keys and retries tests) ------------------------------------------------
# Action(kind="cut"): a streamed answer that sends its first text delta, then drops the
# connection mid-body (a content-length it never fulfils makes the client see a broken body).
_CURRENT = threading.local()  # the action of the request this handler thread is serving
_plain_next_action = FakeLLMServer._next_action
_plain_stream = _Handler._stream


def _next_action_remembered(self: FakeLLMServer, path: str, body: dict[str, Any],
                            headers: dict[str, str]) -> Action:
    action = _plain_next_action(self, path, body, headers)
    _CURRENT.action = action
    return action


def _stream_or_cut(self: _Handler, anthropic: bool, model: str, text: str, pt: int, ot: int) -> None:
    action = getattr(_CURRENT, "action", None)
    if action is None or action.kind != "cut":
        _plain_stream(self, anthropic, model, text, pt, ot)
        return
    if anthropic:
        events = [("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": pt, "output_tokens": 0}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": text[:4]}})]
    else:
        events = [(None, {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                          "choices": [{"index": 0, "delta": {"role": "assistant", "content": text[:4]},
                                       "finish_reason": None}]})]
    raw = "".join((f"event: {e}\n" if e else "") + f"data: {json.dumps(d)}\n\n" for e, d in events).encode()
    self.send_response(200)
    self.send_header("content-type", "text/event-stream")
    self.send_header("content-length", str(len(raw) + 100_000))
    self.end_headers()
    self.wfile.write(raw)
    self.wfile.flush()
    self.close_connection = True
    self.connection.shutdown(2)


def _fail_first(self: FakeLLMServer, n: int, action: Action) -> None:
    """Answer the next ``n`` requests with ``action`` (then normally again)."""
    self.queue(*[action] * n)


def _auth_headers(self: FakeLLMServer) -> list[str]:
    """The credential each request carried (Authorization or x-api-key), in order."""
    out = []
    for r in self.requests:
        h = {k.lower(): v for k, v in r["headers"].items()}
        out.append(" ".join(v for k, v in h.items() if k in ("authorization", "x-api-key")))
    return out


FakeLLMServer._next_action = _next_action_remembered  # type: ignore[method-assign]
_Handler._stream = _stream_or_cut  # type: ignore[method-assign]
FakeLLMServer.fail_first = _fail_first  # type: ignore[attr-defined]
FakeLLMServer.auth_headers = _auth_headers  # type: ignore[attr-defined]
