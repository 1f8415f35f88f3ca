"""Provider batch APIs: OpenAI Batch (``/v1/files`` + ``/v1/batches``) and Anthropic Message Batches.

``run_provider_batch`` sends many chat requests as a few provider batches, which bill about half
the list price, and waits for them. It is resumable: a JSON state file records every submitted
chunk (provider, model, uploaded file id, batch id, custom ids) the moment it exists, and every
answer fetched, so re-running the same items polls the recorded batches instead of submitting
(and paying for) them again, and returns fetched answers from the file.

Requests go through the provider's own SDK client (its key, base URL and timeout rules), its own
body builder (``_params``) and answer reader (``_reply``), so a batch asks and reads exactly what a
live call would. SDK errors become ponder errors in ``translate_sdk_error``, failed rows too.

A create that was sent but whose answer never reached the state file (the process killed in
between) must not be paid for twice: before each create the chunk records its intent (a time and
a ponder tag), and a resume that finds an intent without a batch id lists the provider's batches
and adopts the one that was created. OpenAI batches carry the tag and the input file id in their
``metadata`` (and name their input file): an exact match. Anthropic batches carry no metadata and
their listing shows no custom ids, so the match is a batch of exactly the chunk's size created
around the recorded time that no other chunk of the state file holds; when several fit, the
resume stops and asks which one instead of guessing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    ConfigError,
    DataError,
    PonderError,
    ProviderError,
    ProviderTimeout,
    UnknownProvider,
)
from ._types import ChatRequest, Completion, ModelSpec
from .providers._base import RETRYABLE, SDKProvider, retry_delay
from .providers._errors import translate_sdk_error

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["BatchItem", "run_provider_batch"]

STATE_VERSION = 1
SUPPORTED = ("openai", "anthropic")
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


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch: ``custom_id`` names its answer, ``model`` is a ``provider:model``
    spec or an alias from the config."""

    custom_id: str
    model: str
    request: ChatRequest


class _RowError(Exception):
    """A failed row, shaped like an SDK status error so ``translate_sdk_error`` maps it."""

    def __init__(self, status_code: int | None, message: str) -> None:
        super().__init__(message)
        self.status_code, self.body, self.response = status_code, {"error": {"message": message}}, None


class _Refused(Exception):
    """A create the provider answered with a refusal (HTTP 4xx): no batch was made."""

    def __init__(self, error: PonderError) -> None:
        super().__init__(str(error))
        self.error = error


def _row_error(status: int | None, message: str, *, provider: str, model: str) -> ProviderError:
    return translate_sdk_error(_RowError(status, message or f"HTTP {status}"), provider=provider, model=model)


# --- the state file -------------------------------------------------------------------------


def _fingerprint(spec: ModelSpec, request: ChatRequest) -> str:
    raw = json.dumps([str(spec), request.model_dump(mode="json")], sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:24]


class _State:
    """What has been submitted and fetched, saved atomically (tmp file + ``os.replace``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: dict[str, str] = {}  # custom_id -> fingerprint of what was asked
        self.chunks: list[dict[str, Any]] = []
        self.done: dict[str, dict[str, Any]] = {}  # custom_id -> Completion (JSON)
        if path.exists():
            self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text("utf-8"))
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"unknown version {raw.get('version')!r}")
            self.requests = dict(raw["requests"])
            self.chunks = list(raw["chunks"])
            self.done = dict(raw["done"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"not a provider-batch state file ({exc}); move it away to start over",
                            file=str(self.path)) from None

    def save(self) -> None:
        data = {"version": STATE_VERSION, "requests": self.requests, "chunks": self.chunks,
                "done": self.done}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data), "utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise ConfigError(f"cannot write the batch state file: {exc}", file=str(self.path)) from None


# --- one provider's batch API ---------------------------------------------------------------


class _Batches:
    """Submit, poll and fetch through one provider's SDK client. ``ids`` are the chunk's wire
    ids (``r0``, ``r1``, …: valid custom ids for both APIs whatever the caller's ids are)."""

    def __init__(self, provider: SDKProvider, kind: str) -> None:
        self.provider, self.kind = provider, kind

    def call(self, model: str, fn: Callable[[], Any], *, retry: bool = True) -> Any:
        """``fn()`` with SDK errors translated, retried like a live call when ``retry``."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - translated at the boundary
                err = self.provider._err(exc, model)
            delay = retry_delay(self.provider.retry, attempt, err) if retry else None
            if delay is None:
                raise err from None
            time.sleep(delay)

    def row(self, wire_id: str, request: ChatRequest, model: str) -> bytes:
        params = self.provider._params(request, model)  # type: ignore[attr-defined]
        if self.kind == "openai":
            row = {"custom_id": wire_id, "method": "POST", "url": "/v1/chat/completions", "body": params}
        else:
            params.update(params.pop("extra_body", None) or {})  # the raw JSON the SDK would send
            row = {"custom_id": wire_id, "params": params}
        return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()

    def upload(self, model: str, rows: list[bytes]) -> str:
        client = self.provider.client
        data = b"\n".join(rows) + b"\n"
        # a timed-out upload is only re-sent: an unused file costs nothing
        obj = self.call(model, lambda: client.files.create(
            file=("ponder-batch.jsonl", data, "application/jsonl"), purpose="batch"))
        return str(obj.id)

    def create(self, model: str, rows: list[bytes], input_file_id: str | None, tag: str | None = None) -> str:
        """A new batch's id. Not retried: a create that timed out may still have been accepted
        (``find`` looks for it on resume). Raises ``_Refused`` when the provider refused it."""
        client = self.provider.client
        if self.kind == "openai":
            metadata = {"ponder_input_file_id": str(input_file_id)}
            if tag:
                metadata["ponder_tag"] = tag

            def make() -> Any:
                return client.batches.create(input_file_id=input_file_id, endpoint="/v1/chat/completions",
                                             completion_window="24h", metadata=metadata)
        else:
            requests = [json.loads(r) for r in rows]

            def make() -> Any:
                return client.messages.batches.create(requests=requests)

        refused = False

        def send() -> Any:
            nonlocal refused
            try:
                return make()
            except Exception as exc:
                status = getattr(exc, "status_code", None)  # 408 and 409 may come after a create
                refused = isinstance(status, int) and 400 <= status < 500 and status not in (408, 409)
                raise

        try:
            obj = self.call(model, send, retry=False)
        except PonderError as err:
            if refused:
                raise _Refused(err) from None
            raise
        return str(obj.id)

    def find(self, model: str, entry: dict[str, Any], taken: set[str]) -> list[str]:
        """The ids of the batches an interrupted ``create`` may have made for ``entry`` (none when
        it made none): the provider's batches, listed newest first back to the recorded intent,
        less those in ``taken``."""
        at = float(entry["create_intent_at"])
        since = at - _CLOCK_SKEW_S
        until = at + _CLOCK_SKEW_S + float(getattr(self.provider, "timeout_s", None) or 600.0)
        client = self.provider.client

        def scan() -> list[str]:
            found: list[str] = []
            if self.kind == "openai":
                tag, fid = entry.get("tag"), entry.get("input_file_id")
                for b in client.batches.list(limit=100):
                    if b.created_at < since:
                        break
                    meta = b.metadata or {}
                    if b.id not in taken and ((tag and meta.get("ponder_tag") == tag)
                                              or (fid and b.input_file_id == fid)):
                        found.append(b.id)
                return found
            size = len(entry["custom_ids"])
            for b in client.messages.batches.list(limit=100):
                created = b.created_at.timestamp()
                if created < since:
                    break
                c = b.request_counts
                total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
                if b.id not in taken and created <= until and total == size:
                    found.append(b.id)
            return found

        found: list[str] = self.call(model, scan)
        return found

    def poll(self, model: str, batch_id: str) -> Any | None:
        """The finished batch object, or None while it runs."""
        if self.kind == "openai":
            b = self.call(model, lambda: self.provider.client.batches.retrieve(batch_id))
            return b if b.status in _OPENAI_DONE else None
        b = self.call(model, lambda: self.provider.client.messages.batches.retrieve(batch_id))
        return b if b.processing_status == "ended" else None

    def results(self, model: str, batch: Any) -> Iterator[tuple[str, Any, ProviderError | None]]:
        """(wire id, answer, None) or (wire id, None, error) for every row the batch reports."""
        yield from (self._openai_results if self.kind == "openai" else self._anthropic_results)(model, batch)

    def _openai_results(self, model: str, batch: Any) -> Iterator[tuple[str, Any, ProviderError | None]]:
        client = self.provider.client

        def content(file_id: str) -> bytes:
            return bytes(client.files.content(file_id).content)

        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            raw = self.call(model, partial(content, file_id))
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
                    yield wire_id, None, ProviderTimeout(
                        f"the batch expired before this request ran: {message}",
                        provider=self.provider.name, model=model)
                    continue
                yield wire_id, None, _row_error(status, message, provider=self.provider.name, model=model)

    def _anthropic_results(self, model: str, batch: Any) -> Iterator[tuple[str, Any, ProviderError | None]]:
        rows = self.call(model, lambda: list(self.provider.client.messages.batches.results(batch.id)))
        name = self.provider.name
        for row in rows:
            result = row.result
            if result.type == "succeeded":
                yield row.custom_id, result.message, None
            elif result.type == "errored":
                inner = getattr(result.error, "error", None)
                kind = str(getattr(inner, "type", "") or "")
                message = f"{kind}: {getattr(inner, 'message', '') or ''}".strip(": ")
                yield row.custom_id, None, _row_error(_ANTHROPIC_STATUS.get(kind, 500), message,
                                                      provider=name, model=model)
            elif result.type == "expired":
                yield row.custom_id, None, ProviderTimeout(
                    "the batch expired before this request ran", provider=name, model=model)
            else:
                yield row.custom_id, None, ProviderError(
                    f"the batch request was {result.type}", provider=name, model=model)

    def missing(self, model: str, batch: Any) -> ProviderError:
        """The error for a row the finished batch did not answer."""
        name = self.provider.name
        status = getattr(batch, "status", None) or getattr(batch, "processing_status", "")
        if status == "expired":
            return ProviderTimeout("the batch expired before this request ran", provider=name, model=model)
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        detail = "; ".join(str(getattr(e, "message", "") or getattr(e, "code", "")) for e in errors)
        return ProviderError(f"the batch ended ({status}) without answering this request"
                             + (f": {detail}" if detail else ""), provider=name, model=model)


# --- the run --------------------------------------------------------------------------------


def _provider(client: Client, name: str) -> tuple[SDKProvider, str]:
    kind = client.config.provider_settings(name).type or name
    if kind not in SUPPORTED:
        raise UnknownProvider(
            f"provider {name!r} (type {kind!r}) has no batch API in ponder; --provider-batch "
            f"supports providers of type {' and '.join(SUPPORTED)}")
    p = client.provider(name)
    while not isinstance(p, SDKProvider) and hasattr(p, "provider"):  # a CachedProvider around it
        p = p.provider
    if not isinstance(p, SDKProvider):  # pragma: no cover - the registry builds these
        raise UnknownProvider(f"provider {name!r} has no batch API in ponder")
    return p, kind


def _chunks(kind: str, rows: list[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
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


class _Run:
    def __init__(self, client: Client, items: Sequence[BatchItem], state: _State,
                 poll_s: float, on_progress: Callable[[int, int], None] | None) -> None:
        self.state, self.poll_s, self.on_progress = state, poll_s, on_progress
        self.items: dict[str, tuple[ModelSpec, ChatRequest]] = {}
        self.apis: dict[str, _Batches] = {}
        for item in items:
            if item.custom_id in self.items:
                raise DataError(f"custom_id {item.custom_id!r} appears twice in the batch")
            spec = client.resolve(item.model)
            if spec.provider not in self.apis:
                self.apis[spec.provider] = _Batches(*_provider(client, spec.provider))
            if self.apis[spec.provider].kind == "anthropic" and (getattr(item.request, "n", None) or 1) > 1:
                raise ConfigError(f"{item.custom_id}: n > 1 is not supported in an Anthropic batch")
            self.items[item.custom_id] = (spec, item.request)
        self.failed: dict[str, PonderError] = {}

    def progress(self) -> None:
        if self.on_progress is not None:
            done = sum(1 for cid in self.items if cid in self.state.done or cid in self.failed)
            self.on_progress(done, len(self.items))

    def check_resumable(self) -> None:
        """A custom id the state file knows must still ask the same thing."""
        for cid, (spec, request) in self.items.items():
            known = self.state.requests.get(cid)
            if known is not None and known != _fingerprint(spec, request):
                raise ConfigError(
                    f"custom_id {cid!r} asks something other than what {self.state.path} recorded "
                    "for it; use another state file to start over", file=str(self.state.path))

    def open_chunks(self) -> list[dict[str, Any]]:
        return [c for c in self.state.chunks if not c.get("fetched")]

    def to_submit(self) -> list[str]:
        waiting = {cid for c in self.open_chunks() for cid in c["custom_ids"]}
        return [cid for cid in self.items
                if cid not in self.state.done and cid not in waiting and cid not in self.failed]

    def submit(self, cids: list[str]) -> None:
        groups: dict[tuple[str, str], list[str]] = {}
        for cid in cids:
            spec, _ = self.items[cid]
            groups.setdefault((spec.provider, spec.model), []).append(cid)
        for (provider, model), group in groups.items():
            api = self.apis[provider]
            rows = [(cid, api.row(f"r{i}", self.items[cid][1], model)) for i, cid in enumerate(group)]
            for chunk in _chunks(api.kind, rows):
                ids = [cid for cid, _ in chunk]
                first = group.index(ids[0])  # wire ids count on across a group's chunks
                wire = [row for _, row in chunk]
                entry: dict[str, Any] = {"provider": provider, "model": model, "custom_ids": ids,
                                         "first": first, "input_file_id": None, "batch_id": None,
                                         "fetched": False}
                for cid in ids:
                    self.state.requests[cid] = _fingerprint(*self.items[cid])
                self.state.chunks.append(entry)
                self.start(entry, wire)

    def start(self, entry: dict[str, Any], wire: list[bytes] | None = None) -> None:
        """Upload (OpenAI) and create the chunk's batch, saving each id as soon as it exists."""
        api, model = self.apis[entry["provider"]], entry["model"]
        if wire is None:
            wire = [api.row(f"r{entry['first'] + i}", self.items[cid][1], model)
                    for i, cid in enumerate(entry["custom_ids"])]
        if api.kind == "openai" and not entry["input_file_id"]:
            entry["input_file_id"] = api.upload(model, wire)
            self.state.save()
        # the intent, saved before the create: a run stopped before the batch id is saved finds
        # the batch again (``adopt``) instead of paying for a second one
        entry.setdefault("tag", uuid.uuid4().hex)
        entry["create_intent_at"] = time.time()
        self.state.save()
        try:
            entry["batch_id"] = api.create(model, wire, entry["input_file_id"], entry["tag"])
        except _Refused as refused:  # no batch exists: nothing to look for on resume
            entry["create_intent_at"] = None
            self.state.save()
            raise refused.error from None
        entry["submitted_at"] = time.time()
        self.state.save()
        self.progress()

    def adopt(self, entry: dict[str, Any]) -> bool:
        """Whether a batch created for ``entry`` by a run that stopped before saving its id was
        found (and is now recorded). Only a chunk with a recorded intent can have one."""
        if not entry.get("create_intent_at"):
            return False
        taken = {str(c["batch_id"]) for c in self.state.chunks if c.get("batch_id")}
        found = self.apis[entry["provider"]].find(entry["model"], entry, taken)
        if not found:
            return False
        if len(found) > 1:
            raise ConfigError(
                f"a run stopped while creating a batch of {len(entry['custom_ids'])} requests for "
                f"{entry['provider']}:{entry['model']}, and several batches could be it "
                f"({', '.join(found)}); write the right one as that chunk's batch_id in the state "
                "file to go on", file=str(self.state.path))
        entry["batch_id"] = found[0]
        entry["submitted_at"] = entry["create_intent_at"]
        self.state.save()
        return True

    def wait(self) -> None:
        """Poll every open chunk until each is fetched."""
        for entry in self.open_chunks():
            if not entry["batch_id"] and entry["provider"] in self.apis:  # stopped before its create
                if self.adopt(entry):  # ... or after it, before its id was saved
                    continue
                if any(cid not in self.items for cid in entry["custom_ids"]):
                    entry["fetched"] = True  # never submitted, and no longer asked for
                    self.state.save()
                    continue
                self.start(entry)
        while pending := self.open_chunks():
            for entry in pending:
                api, model = self.apis.get(entry["provider"]), entry["model"]
                if api is None:  # a chunk of a provider no longer in the items: leave it open
                    continue
                batch = api.poll(model, entry["batch_id"])
                if batch is not None:
                    self.fetch(api, entry, batch)
            self.progress()
            if any(e["provider"] in self.apis for e in self.open_chunks()):
                time.sleep(self.poll_s)
            else:
                break

    def fetch(self, api: _Batches, entry: dict[str, Any], batch: Any) -> None:
        ids: list[str] = entry["custom_ids"]
        model, seen = entry["model"], set()
        latency = max(0.0, time.time() - float(entry.get("submitted_at") or time.time()))
        for wire_id, answer, err in api.results(model, batch):
            try:
                index = int(wire_id[1:]) - int(entry.get("first") or 0)
                cid = ids[index] if index >= 0 else ""
            except (ValueError, IndexError):
                continue
            if not cid:
                continue
            seen.add(cid)
            if err is None:
                try:
                    completion = self.price(api, cid, model, answer, latency)
                except PonderError as exc:
                    self.failed[cid] = exc
                    continue
                self.state.done[cid] = completion.model_dump(mode="json")
                self.failed.pop(cid, None)
            else:
                self.failed[cid] = err
        for cid in ids:
            if cid not in seen:
                self.failed[cid] = api.missing(model, batch)
        entry["fetched"] = True
        self.state.save()

    def price(self, api: _Batches, cid: str, model: str, answer: Any, latency: float) -> Completion:
        """The answer read and priced as a live call would be, then billed at the batch rate."""
        p: Any = api.provider
        try:
            reply = p._reply(json.dumps(answer).encode() if api.kind == "openai" else answer, model)
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise p._err(exc, model) from None
        request = self.items[cid][1] if cid in self.items else ChatRequest(messages=())
        c: Completion = p._price(request, model, reply, latency)
        return c.model_copy(update={"cost_usd": p.prices.cost(p.name, model, c.usage, batch=True)})

    def result(self, cid: str) -> Completion | PonderError:
        if cid in self.state.done:
            return Completion.model_validate(self.state.done[cid])
        spec = self.items[cid][0]
        return self.failed.get(cid) or ProviderError(
            "no answer came back from its batch", provider=spec.provider, model=spec.model)


def run_provider_batch(
    client: Client, items: Sequence[BatchItem], *, state_path: Path, poll_s: float = 5.0,
    on_progress: Callable[[int, int], None] | None = None, retry_failed: bool = True,
) -> dict[str, Completion | PonderError]:
    """Answer ``items`` through their providers' batch APIs, at the batch rate.

    Returns every custom id's priced Completion, or the ponder error its request failed with
    (an error row, an expired or cancelled batch). With ``retry_failed``, requests that failed in
    a way a live call would retry (rate limit, server error, expiry) are sent once more, in a new
    batch. Errors of the batch API itself (auth, an endpoint without batches) are raised.

    ``state_path`` makes the run resumable: run it again with the same items after an interrupt
    and it polls the batches it recorded instead of paying for them again; answers already fetched
    come from the file. A failed request has no answer there, so a re-run asks it again.
    ``on_progress(finished, total)`` is called after each submission and each round of polls.
    """
    state = _State(Path(state_path))
    run = _Run(client, items, state, poll_s, on_progress)
    run.check_resumable()
    run.progress()
    run.wait()  # chunks recorded by an earlier run
    run.submit(run.to_submit())
    run.wait()
    if retry_failed:
        again = [cid for cid, err in run.failed.items() if isinstance(err, RETRYABLE)]
        if again:
            run.submit(again)
            run.wait()
    return {cid: run.result(cid) for cid in run.items}
