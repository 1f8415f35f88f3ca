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
    # a whole assistant message to answer with (OpenAI shape: content, tool_calls, refusal); the
    # Anthropic endpoint gets it as text and tool_use blocks. Streams send tool-call arguments in
    # fragments, as OpenAI does.
    message: dict[str, Any] | None = None


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
        if action.message is not None:
            self._answer_message(anthropic, model, action.message, bool(body.get("stream")), prompt_tokens)
        elif body.get("stream"):
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

    def _answer_message(self, anthropic: bool, model: str, msg: dict[str, Any], stream: bool, pt: int) -> None:
        calls = msg.get("tool_calls") or []
        text = msg.get("content") or ""
        ot = _tokens(text + json.dumps(calls))
        if anthropic:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            blocks += [{"type": "tool_use", "id": c["id"], "name": c["function"]["name"],
                        "input": json.loads(c["function"]["arguments"])} for c in calls]
            answer = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": blocks,
                      "stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None,
                      "usage": {"input_tokens": pt, "output_tokens": ot}}
            if not stream:
                self._send_json(200, answer)
                return
            events: list[tuple[str | None, Any]] = [("message_start", {"type": "message_start", "message": dict(
                answer, content=[], stop_reason=None, usage={"input_tokens": pt, "output_tokens": 0})})]
            for i, b in enumerate(blocks):
                start = dict(b, input={}) if b["type"] == "tool_use" else dict(b, text="")
                events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}))
                delta = ({"type": "input_json_delta", "partial_json": json.dumps(b["input"])} if b["type"] == "tool_use"
                         else {"type": "text_delta", "text": b["text"]})
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}))
                events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
            events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": answer["stop_reason"],
                                                                                "stop_sequence": None},
                                             "usage": {"output_tokens": ot}}))
            events.append(("message_stop", {"type": "message_stop"}))
        else:
            finish = "tool_calls" if calls else "stop"
            message = {"role": "assistant", "content": msg.get("content"), "refusal": msg.get("refusal"),
                       **({"tool_calls": calls} if calls else {})}
            if not stream:
                self._send_json(200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                                      "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                      "usage": {"prompt_tokens": pt, "completion_tokens": ot, "total_tokens": pt + ot}})
                return
            base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
            deltas: list[dict[str, Any]] = [{"role": "assistant", "content": text[:3] if text else None}]
            if text[3:]:
                deltas.append({"content": text[3:]})
            for j, c in enumerate(calls):
                args = c["function"]["arguments"]
                deltas.append({"tool_calls": [{"index": j, "id": c["id"], "type": "function",
                                               "function": {"name": c["function"]["name"], "arguments": ""}}]})
                for k in range(0, len(args), 5):  # arguments in fragments
                    deltas.append({"tool_calls": [{"index": j, "function": {"arguments": args[k:k + 5]}}]})
            events = [(None, {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}) for d in deltas]
            events.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
            events.append((None, {**base, "choices": [], "usage": {"prompt_tokens": pt, "completion_tokens": ot,
                                                                   "total_tokens": pt + ot}}))
            events.append((None, "[DONE]"))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        for event, data in events:
            chunk = (f"event: {event}\n" if event else "") + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
            self.wfile.write(chunk.encode())
        self.wfile.flush()

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
            n = int((getattr(_CURRENT, "body", None) or {}).get("n") or 1)  # choices interleaved, as OpenAI does
            for c in range(n):
                t = text if c == 0 else f"{text} #{c}"
                for i, p in enumerate([t[j:j + 4] for j in range(0, len(t), 4)] or [""]):
                    delta = {"content": p} if i else {"role": "assistant", "content": p}
                    emit(None, {**base, "choices": [{"index": c, "delta": delta, "finish_reason": None}]})
            for c in range(n):
                emit(None, {**base, "choices": [{"index": c, "delta": {}, "finish_reason": "stop"}]})
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


# --- Appended helpers (collect tests): ``n`` choices and ``logprobs`` on chat completions ---------
# A request with ``n`` > 1 gets n choices (the first is the usual answer, choice i adds " #i") and
# usage counting every choice's tokens; ``logprobs: true`` adds choice.logprobs.content with one
# entry per word, logprob -0.1 * (position + 1). Requests without either are answered as before.
_plain_next_action_n = FakeLLMServer._next_action
_plain_send_json = _Handler._send_json


def _next_action_with_body(self: FakeLLMServer, path: str, body: dict[str, Any],
                           headers: dict[str, str]) -> Action:
    _CURRENT.body = body
    return _plain_next_action_n(self, path, body, headers)


def _choices_n_logprobs(obj: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    n = int(body.get("n") or 1)
    if n <= 1 and not body.get("logprobs"):
        return obj
    first = obj["choices"][0]
    text = first["message"]["content"]
    choices = []
    for i in range(n):
        t = text if i == 0 else f"{text} #{i}"
        choice = {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
        if body.get("logprobs"):
            choice["logprobs"] = {"content": [
                {"token": w, "logprob": -0.1 * (j + 1), "bytes": None, "top_logprobs": []}
                for j, w in enumerate(t.split())]}
        choices.append(choice)
    out_tokens = sum(_tokens(c["message"]["content"]) for c in choices)
    usage = dict(obj["usage"], completion_tokens=out_tokens,
                 total_tokens=obj["usage"]["prompt_tokens"] + out_tokens)
    return dict(obj, choices=choices, usage=usage)


def _send_json_n(self: _Handler, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
    body = getattr(_CURRENT, "body", None) or {}
    if status == 200 and isinstance(obj, dict) and obj.get("object") == "chat.completion":
        obj = _choices_n_logprobs(obj, body)
    _plain_send_json(self, status, obj, headers)


FakeLLMServer._next_action = _next_action_with_body  # type: ignore[method-assign]
_Handler._send_json = _send_json_n  # type: ignore[method-assign]


# --- Appended: provider batch APIs ------------------------------------------------------------
# OpenAI Batch: POST /v1/files (multipart), GET /v1/files/{id}/content, POST /v1/batches,
# GET /v1/batches/{id}, GET /v1/batches (list: newest first, ``limit``/``after``; a batch keeps
# the ``metadata`` it was created with). Anthropic Message Batches: POST /v1/messages/batches,
# GET /v1/messages/batches/{id}, GET /v1/messages/batches/{id}/results (JSONL),
# GET /v1/messages/batches (list: newest first, ``limit``/``after_id``/``before_id``).
# * A batch is in progress for its first ``srv.batch_polls`` retrievals, then ends (completed).
#   ``srv.batch_end_statuses`` lists how the next OpenAI batches end instead ("expired",
#   "failed"), in order: such a batch answers no row.
# * Rows answer like the chat endpoints (echo). ``srv.batch_faults[text]`` lists what the next
#   rows whose last user message is ``text`` do instead, one entry per row: an HTTP status
#   (400, 429, 500, ...) or "expired"; once the list is empty such rows answer normally.
# * ``srv.endpoint_counts["POST /v1/batches"]`` counts requests per endpoint (ids shown as {id}).
# * Queued Actions (status, drop, slow) apply to these endpoints too.
import itertools as _itertools  # noqa: E402
import re as _re  # noqa: E402
from collections import Counter as _Counter  # noqa: E402
from email.parser import BytesParser as _BytesParser  # noqa: E402
from email.policy import HTTP as _HTTP_POLICY  # noqa: E402

_BATCH_ROUTES = [
    ("POST", _re.compile(r"^/v1/files$"), "/v1/files"),
    ("GET", _re.compile(r"^/v1/files/([^/]+)/content$"), "/v1/files/{id}/content"),
    ("POST", _re.compile(r"^/v1/batches$"), "/v1/batches"),
    ("GET", _re.compile(r"^/v1/batches$"), "/v1/batches"),
    ("GET", _re.compile(r"^/v1/batches/([^/]+)$"), "/v1/batches/{id}"),
    ("POST", _re.compile(r"^/v1/messages/batches$"), "/v1/messages/batches"),
    ("GET", _re.compile(r"^/v1/messages/batches$"), "/v1/messages/batches"),
    ("GET", _re.compile(r"^/v1/messages/batches/([^/]+)$"), "/v1/messages/batches/{id}"),
    ("GET", _re.compile(r"^/v1/messages/batches/([^/]+)/results$"), "/v1/messages/batches/{id}/results"),
]
_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                          429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
_plain_init = FakeLLMServer.__init__
_plain_do_get = _Handler.do_GET
_plain_do_post = _Handler.do_POST
_ids = _itertools.count(1)


def _init_with_batches(self: FakeLLMServer) -> None:
    _plain_init(self)
    self.batch_polls = 1  # type: ignore[attr-defined]
    self.batch_faults = {}  # type: ignore[attr-defined]
    self.endpoint_counts = _Counter()  # type: ignore[attr-defined]
    self.files = {}  # type: ignore[attr-defined]
    self.batches = {}  # type: ignore[attr-defined]
    self.batch_end_statuses = []  # type: ignore[attr-defined]


def _echo(body: dict[str, Any], anthropic: bool) -> dict[str, Any]:
    """What the chat endpoint answers to ``body`` (no faults, no stream)."""
    last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
    content = last.get("content", "")
    text = f"echo: {content}"
    pt = sum(_tokens(str(m.get("content", ""))) for m in body.get("messages", []))
    ot = _tokens(text)
    model = body.get("model", "fake")
    if anthropic:
        forced = body.get("tool_choice") or {}
        block: dict[str, Any] = {"type": "text", "text": text}
        if forced.get("type") == "tool":  # a forced tool answers through a tool_use block
            block = {"type": "tool_use", "id": f"toolu_{next(_ids)}", "name": forced["name"],
                     "input": {"echo": content}}
        return {"id": f"msg_{next(_ids)}", "type": "message", "role": "assistant", "model": model,
                "content": [block], "stop_reason": "tool_use" if block["type"] == "tool_use" else "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": pt, "output_tokens": ot}}
    return {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": pt, "completion_tokens": ot, "total_tokens": pt + ot}}


def _fault(owner: FakeLLMServer, body: dict[str, Any]) -> int | str | None:
    last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
    with owner._lock:
        faults = owner.batch_faults.get(last.get("content"))  # type: ignore[attr-defined]
        return faults.pop(0) if faults else None


def _openai_rows(owner: FakeLLMServer, raw: bytes) -> tuple[list[str], list[str]]:
    out, err = [], []
    for line in raw.decode().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        fault = _fault(owner, row["body"])
        rid = f"batch_req_{next(_ids)}"
        if fault is None:
            out.append(json.dumps({"id": rid, "custom_id": row["custom_id"], "error": None, "response": {
                "status_code": 200, "request_id": rid, "body": _echo(row["body"], anthropic=False)}}))
        elif fault == "expired":
            err.append(json.dumps({"id": rid, "custom_id": row["custom_id"], "response": None, "error": {
                "code": "batch_expired", "message": "This request could not be executed before the "
                "completion window expired."}}))
        else:
            err.append(json.dumps({"id": rid, "custom_id": row["custom_id"], "error": None, "response": {
                "status_code": fault, "request_id": rid, "body": {"error": {
                    "message": f"row failed with HTTP {fault}", "type": "server_error"}}}}))
    return out, err


_MESSAGES_PARAMS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature",
    "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers"})


def _anthropic_rows(owner: FakeLLMServer, requests: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in requests:
        fault = _fault(owner, r["params"])
        unknown = sorted(k for k in r["params"] if k not in _MESSAGES_PARAMS)
        if unknown:  # the Messages API refuses a field it does not know
            result: dict[str, Any] = {"type": "errored", "error": {"type": "error", "error": {
                "type": "invalid_request_error", "message": f"{unknown[0]}: Extra inputs are not permitted"}}}
        elif fault is None:
            result = {"type": "succeeded", "message": _echo(r["params"], anthropic=True)}
        elif fault == "expired":
            result = {"type": "expired"}
        else:
            result = {"type": "errored", "error": {"type": "error", "error": {
                "type": _ANTHROPIC_ERROR_TYPES.get(int(fault), "api_error"),
                "message": f"row failed with HTTP {fault}"}}}
        rows.append(json.dumps({"custom_id": r["custom_id"], "result": result}))
    return rows


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    msg = _BytesParser(policy=_HTTP_POLICY).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    parts = {}
    for part in msg.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        parts[str(name)] = part.get_payload(decode=True) or b""
    return parts


def _openai_batch_view(b: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in b.items() if not k.startswith("_")}


def _batch_list(self: _Handler, anthropic: bool) -> None:
    """A page of the batches of one API, newest first, shaped like that API's list."""
    from urllib.parse import parse_qs, urlsplit

    query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
    owner = self.server.owner
    with owner._lock:
        mine = [b for b in reversed(owner.batches.values())  # type: ignore[attr-defined]
                if ("_rows" in b) == anthropic]
    ids = [b["id"] for b in mine]
    after = query.get("after_id" if anthropic else "after")
    before = query.get("before_id") if anthropic else None
    if after in ids:
        mine = mine[ids.index(after) + 1:]
    elif before in ids:
        mine = mine[:ids.index(before)]
    limit = int(query.get("limit") or 20)
    page = mine[-limit:] if before in ids else mine[:limit]
    data = [_openai_batch_view(b) for b in page]
    body: dict[str, Any] = {"data": data, "has_more": len(mine) > len(page),
                            "first_id": data[0]["id"] if data else None,
                            "last_id": data[-1]["id"] if data else None}
    if not anthropic:
        body["object"] = "list"
    self._send_json(200, body)


def _serve_batch(self: _Handler, method: str) -> bool:
    """Answer a batch endpoint; False when the path is not one."""
    path = self.path.split("?")[0].rstrip("/")
    found = next(((pattern.match(path), route) for verb, pattern, route in _BATCH_ROUTES
                  if verb == method and pattern.match(path)), None)
    if found is None:
        return False
    m, route = found
    assert m is not None
    owner = self.server.owner
    length = int(self.headers.get("content-length") or 0)
    raw = self.rfile.read(length) if length else b""
    with owner._lock:
        owner.endpoint_counts[f"{method} {route}"] += 1  # type: ignore[attr-defined]
    action = owner._next_action(self.path, {}, dict(self.headers))
    if action.delay_s:
        time.sleep(action.delay_s)
    if action.kind == "drop":
        self.close_connection = True
        self.connection.shutdown(2)
        return True
    if action.kind == "status":
        self._send_json(action.status, action.body or {"error": {"message": f"HTTP {action.status}",
                                                                 "type": "server_error"}}, action.headers)
        return True
    ident = m.group(1) if m.groups() else None
    files, batches = owner.files, owner.batches  # type: ignore[attr-defined]
    now = int(time.time())
    if route == "/v1/files":
        parts = _multipart(self.headers.get("content-type", ""), raw)
        fid = f"file-{next(_ids)}"
        files[fid] = parts.get("file", b"")
        self._send_json(200, {"id": fid, "object": "file", "bytes": len(files[fid]), "created_at": now,
                              "filename": "batch.jsonl", "purpose": parts.get("purpose", b"").decode(),
                              "status": "processed"})
    elif route == "/v1/files/{id}/content":
        if ident not in files:
            self._send_json(404, {"error": {"message": f"no file {ident}"}})
            return True
        data = files[ident]
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    elif route in ("/v1/batches", "/v1/messages/batches") and method == "GET":
        _batch_list(self, anthropic=route == "/v1/messages/batches")
    elif route == "/v1/batches":
        body = json.loads(raw or b"{}")
        if body.get("input_file_id") not in files:
            self._send_json(400, {"error": {"message": "unknown input_file_id"}})
            return True
        out, err = _openai_rows(owner, files[body["input_file_id"]])
        bid = f"batch_{next(_ids)}"
        batches[bid] = {"id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                        "input_file_id": body["input_file_id"],
                        "completion_window": body.get("completion_window"), "status": "validating",
                        "metadata": body.get("metadata"),
                        "output_file_id": None, "error_file_id": None, "created_at": now,
                        "request_counts": {"total": len(out) + len(err), "completed": 0, "failed": 0},
                        "_polls": 0, "_out": out, "_err": err}
        self._send_json(200, _openai_batch_view(batches[bid]))
    elif route == "/v1/batches/{id}":
        b = batches.get(ident)
        if b is None or "_out" not in b:
            self._send_json(404, {"error": {"message": f"no batch {ident}"}})
            return True
        with owner._lock:
            b["_polls"] += 1
            ends = owner.batch_end_statuses  # type: ignore[attr-defined]
            if b["_polls"] >= owner.batch_polls and b["status"] not in ("completed", "expired", "failed"):  # type: ignore[attr-defined]
                b["status"] = ends.pop(0) if ends else "completed"
                if b["status"] == "failed":
                    b["errors"] = {"object": "list", "data": [{"code": "invalid_request",
                                                               "message": "the input file is invalid"}]}
                if b["status"] != "completed":  # ended before any row ran
                    b["_out"], b["_err"] = [], []
                for key, rows in (("output_file_id", b["_out"]), ("error_file_id", b["_err"])):
                    if rows:
                        fid = f"file-{next(_ids)}"
                        files[fid] = ("\n".join(rows) + "\n").encode()
                        b[key] = fid
                b["request_counts"] = {"total": len(b["_out"]) + len(b["_err"]),
                                       "completed": len(b["_out"]), "failed": len(b["_err"])}
            elif b["status"] == "validating":
                b["status"] = "in_progress"
        self._send_json(200, _openai_batch_view(b))
    elif route == "/v1/messages/batches":
        body = json.loads(raw or b"{}")
        bid = f"msgbatch_{next(_ids)}"
        rows = _anthropic_rows(owner, body.get("requests", []))
        batches[bid] = {"id": bid, "type": "message_batch", "processing_status": "in_progress",
                        "request_counts": {"processing": len(rows), "succeeded": 0, "errored": 0,
                                           "canceled": 0, "expired": 0},
                        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 86400)),
                        "ended_at": None, "cancel_initiated_at": None, "archived_at": None,
                        "results_url": None, "_polls": 0, "_rows": rows,
                        "_requests": body.get("requests", [])}
        self._send_json(200, _openai_batch_view(batches[bid]))
    elif route == "/v1/messages/batches/{id}":
        b = batches.get(ident)
        if b is None or "_rows" not in b:
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                             "message": f"no batch {ident}"}})
            return True
        with owner._lock:
            b["_polls"] += 1
            if b["_polls"] >= owner.batch_polls:  # type: ignore[attr-defined]
                b["processing_status"] = "ended"
                b["ended_at"] = "2026-01-01T00:01:00Z"
                b["results_url"] = f"{owner.base}/v1/messages/batches/{ident}/results"
        self._send_json(200, _openai_batch_view(b))
    else:  # results
        b = batches.get(ident)
        if b is None or b.get("processing_status") != "ended":
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                             "message": "results not ready"}})
            return True
        data = ("\n".join(b["_rows"]) + "\n").encode()
        self.send_response(200)
        self.send_header("content-type", "application/x-jsonl")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    return True


def _do_get_with_batches(self: _Handler) -> None:
    if not _serve_batch(self, "GET"):
        _plain_do_get(self)


def _do_post_with_batches(self: _Handler) -> None:
    if not _serve_batch(self, "POST"):
        _plain_do_post(self)


FakeLLMServer.__init__ = _init_with_batches  # type: ignore[method-assign]
_Handler.do_GET = _do_get_with_batches  # type: ignore[method-assign]
_Handler.do_POST = _do_post_with_batches  # type: ignore[method-assign]


# --- Appended: scripted replies (grading tests) -----------------------------------------------
# ``srv.replier = fn``: fn(request body) -> reply text (or None for the usual echo), used for
# chat requests that no queued Action answers. Unset (the default), nothing changes.
_plain_next_action_replier = FakeLLMServer._next_action


def _next_action_replier(self: FakeLLMServer, path: str, body: dict[str, Any],
                         headers: dict[str, str]) -> Action:
    action = _plain_next_action_replier(self, path, body, headers)
    replier = getattr(self, "replier", None)
    if replier is not None and action is self.default and body.get("messages"):
        text = replier(body)
        if text is not None:
            return Action(text=text)
    return action


FakeLLMServer._next_action = _next_action_replier  # type: ignore[method-assign]
