"""One provider's batch API (OpenAI Batch, Anthropic Message Batches) through its own SDK client:
rows and answers as a live call's, errors through ``translate_sdk_error``, calls through its retries."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from .._exceptions import ProviderError, ProviderTimeout
from .._types import ChatRequest, Completion
from ._base import RetryPolicy, SDKProvider, once
from ._errors import translate_sdk_error

BATCH_KINDS = ("openai", "anthropic")
# Per batch: OpenAI takes 50,000 requests in a file of at most 200 MB; Anthropic 100,000 requests
# in at most 256 MB. Leave room for the JSON around the rows.
MAX_REQUESTS = {"openai": 50_000, "anthropic": 100_000}
MAX_BYTES = {"openai": 190_000_000, "anthropic": 240_000_000}
_OPENAI_DONE = ("completed", "failed", "expired", "cancelled")
# How far a provider's clock may differ from ours when a batch is looked up by its creation time
_CLOCK_SKEW_S = 600.0
# Anthropic's error types, as the HTTP statuses the same errors have on a live call
_ANTHROPIC_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                     "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                     "rate_limit_error": 429, "api_error": 500, "timeout_error": 504,
                     "overloaded_error": 529}


class _RowError(Exception):
    """A failed row, shaped like an SDK status error so ``translate_sdk_error`` maps it."""

    def __init__(self, status_code: int | None, message: str) -> None:
        super().__init__(message)
        self.status_code, self.body = status_code, {"error": {"message": message}}


class Refused(ProviderError):
    """A create refused (HTTP 4xx): no batch was made. A ProviderError, so no retry wraps it."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(error.reason, provider=error.provider, model=error.model)
        self.error = error


class BatchAPI:
    """Submit, poll and fetch through one provider's SDK client."""

    def __init__(self, provider: SDKProvider, kind: str) -> None:
        self.provider, self.kind = provider, kind

    @property
    def _batches(self) -> Any:
        client = self.provider.client
        return client.batches if self.kind == "openai" else client.messages.batches

    def call(self, model: str, fn: Callable[[], Any], *, retry: bool = True) -> Any:
        (value,) = self.provider._retried(partial(once, fn), model, None if retry else RetryPolicy(max_retries=0))
        return value

    def row(self, wire_id: str, request: ChatRequest, model: str) -> bytes:
        p: Any = self.provider
        if self.kind == "openai":
            params = p._params(request, model)
            row = {"custom_id": wire_id, "method": "POST", "url": "/v1/chat/completions", "body": params}
        else:
            params = p._split(request, model)[0]  # without the forced tool's name (``reply`` reads it)
            params.update(params.pop("extra_body", None) or {})  # the raw JSON the SDK would send
            row = {"custom_id": wire_id, "params": params}
        return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()

    def price(self, answer: Any, request: ChatRequest, model: str, latency: float) -> Completion:
        """A row's answer read and priced as a live call's would be, billed at the batch rate."""
        p: Any = self.provider
        try:
            if self.kind == "openai":
                reply = p._reply(json.dumps(answer).encode(), model)
            else:
                reply = p._reply(answer, model, p._split(request, model)[1])
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise p._err(exc, model) from None
        return self.provider._price(request, model, reply, latency, batch=True)

    def upload(self, model: str, rows: list[bytes]) -> str:
        data = b"\n".join(rows) + b"\n"
        # a timed-out upload is only re-sent: an unused file costs nothing
        obj = self.call(model, partial(self.provider.client.files.create, purpose="batch",
                                       file=("ponder-batch.jsonl", data, "application/jsonl")))
        return str(obj.id)

    def create(self, model: str, rows: list[bytes], input_file_id: str | None, tag: str | None = None) -> str:
        """A new batch's id. Not retried: a create that timed out may have been accepted (``find``)."""
        if self.kind == "openai":
            metadata = {"ponder_input_file_id": str(input_file_id)}
            if tag:
                metadata["ponder_tag"] = tag
            make = partial(self._batches.create, input_file_id=input_file_id, metadata=metadata,
                           endpoint="/v1/chat/completions", completion_window="24h")
        else:
            make = partial(self._batches.create, requests=[json.loads(r) for r in rows])

        def send() -> Any:
            try:
                return make()
            except Exception as exc:
                status = getattr(exc, "status_code", None)  # 408 and 409 may come after a create
                if isinstance(status, int) and 400 <= status < 500 and status not in (408, 409):
                    raise Refused(self.provider._err(exc, model)) from None
                raise

        return str(self.call(model, send, retry=False).id)

    def find(self, model: str, entry: dict[str, Any], taken: set[str]) -> list[str]:
        """The batches (not in ``taken``) an interrupted ``create`` may have made for ``entry``."""
        at = float(entry["create_intent_at"])
        since = at - _CLOCK_SKEW_S
        until = at + _CLOCK_SKEW_S + float(getattr(self.provider, "timeout_s", None) or 600.0)
        openai, batches = self.kind == "openai", self._batches
        tag, fid, size = entry.get("tag"), entry.get("input_file_id"), len(entry["custom_ids"])

        def scan() -> list[str]:
            found: list[str] = []
            for b in batches.list(limit=100):  # newest first
                created = b.created_at if openai else b.created_at.timestamp()
                if created < since:
                    break
                if openai:
                    meta = b.metadata or {}
                    fits = (tag and meta.get("ponder_tag") == tag) or (fid and b.input_file_id == fid)
                else:
                    c = b.request_counts
                    total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
                    fits = created <= until and total == size
                if b.id not in taken and fits:
                    found.append(b.id)
            return found

        return list(self.call(model, scan))

    def poll(self, model: str, batch_id: str) -> Any | None:
        """The finished batch object, or None while it runs."""
        b = self.call(model, lambda: self._batches.retrieve(batch_id))
        done = b.status in _OPENAI_DONE if self.kind == "openai" else b.processing_status == "ended"
        return b if done else None

    def results(self, model: str, batch: Any) -> Iterator[tuple[str, Any, ProviderError | None]]:
        """(wire id, answer, None) or (wire id, None, error) for every row the batch reports."""
        yield from (self._openai_results if self.kind == "openai" else self._anthropic_results)(model, batch)

    def _openai_results(self, model: str, batch: Any) -> Iterator[tuple[str, Any, ProviderError | None]]:
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            got = self.call(model, partial(self.provider.client.files.content, file_id))
            raw = bytes(got.content)
            for line in raw.splitlines():
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    wire_id = str(row["custom_id"])
                except (ValueError, KeyError, TypeError):
                    continue  # a row that names no request answers none
                resp, err = row.get("response") or {}, row.get("error") or {}
                status, body = resp.get("status_code"), resp.get("body")
                if status == 200 and isinstance(body, dict):
                    yield wire_id, body, None
                    continue
                message = ""
                if isinstance(body, dict) and isinstance(body.get("error"), dict):
                    message = str(body["error"].get("message") or "")
                message = message or str(err.get("message") or err.get("code") or "")
                if status is None and err.get("code") == "batch_expired":
                    yield wire_id, None, self._expired(model, message)
                else:
                    yield wire_id, None, self._failed(model, status, message)

    def _anthropic_results(self, model: str, batch: Any) -> Iterator[tuple[str, Any, ProviderError | None]]:
        rows = self.call(model, lambda: list(self._batches.results(batch.id)))
        for row in rows:
            result = row.result
            if result.type == "succeeded":
                yield row.custom_id, result.message, None
            elif result.type == "errored":
                inner = getattr(result.error, "error", None)
                kind = str(getattr(inner, "type", "") or "")
                message = f"{kind}: {getattr(inner, 'message', '') or ''}".strip(": ")
                status = _ANTHROPIC_STATUS.get(kind, 500)
                yield row.custom_id, None, self._failed(model, status, message)
            elif result.type == "expired":
                yield row.custom_id, None, self._expired(model)
            else:
                yield row.custom_id, None, ProviderError(f"the batch request was {result.type}",
                                                         provider=self.provider.name, model=model)

    def _failed(self, model: str, status: int | None, message: str) -> ProviderError:
        """A failed row's error, as a live call with that status would have raised it."""
        return translate_sdk_error(_RowError(status, message or f"HTTP {status}"),
                                   provider=self.provider.name, model=model)

    def _expired(self, model: str, detail: str = "") -> ProviderError:
        message = "the batch expired before this request ran" + (f": {detail}" if detail else "")
        return ProviderTimeout(message, provider=self.provider.name, model=model)

    def missing(self, model: str, batch: Any) -> ProviderError:
        status = getattr(batch, "status", None) or getattr(batch, "processing_status", "")
        if status == "expired":
            return self._expired(model)
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        detail = "; ".join(str(getattr(e, "message", "") or getattr(e, "code", "")) for e in errors)
        return ProviderError(f"the batch ended ({status}) without answering this request"
                             + (f": {detail}" if detail else ""), provider=self.provider.name,
                             model=model)


def chunks(kind: str, rows: list[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
    """``rows`` (id, JSON line) cut into batches within the ``kind`` API's limits."""
    chunk: list[tuple[str, bytes]] = []
    size = 0
    for cid, row in rows:
        if chunk and (len(chunk) >= MAX_REQUESTS[kind] or size + len(row) > MAX_BYTES[kind]):
            yield chunk
            chunk, size = [], 0
        chunk.append((cid, row))
        size += len(row) + 1
    if chunk:
        yield chunk
