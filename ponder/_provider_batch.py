"""Chat requests through OpenAI's and Anthropic's batch APIs (about half price), resumable: a state file
records each chunk, answer and create intent as it exists, so a re-run polls instead of paying again."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._exceptions import ConfigError, DataError, PonderError, ProviderError, UnknownProvider
from ._types import ChatRequest, Completion, ModelSpec
from .providers._base import RETRYABLE
from .providers._batch_api import BATCH_KINDS, BatchAPI, Refused, chunks

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["BatchItem", "run_provider_batch"]

STATE_VERSION = 1


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch; ``model`` is a ``provider:model`` spec or a config alias."""

    custom_id: str
    model: str
    request: ChatRequest



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
        if not path.exists():
            return
        try:
            raw = json.loads(path.read_text("utf-8"))
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



class _Run:
    def __init__(self, client: Client, items: Sequence[BatchItem], state: _State,
                 poll_s: float, on_progress: Callable[[int, int], None] | None) -> None:
        self.state, self.poll_s, self.on_progress = state, poll_s, on_progress
        self.items: dict[str, tuple[ModelSpec, ChatRequest]] = {}
        self.apis: dict[str, BatchAPI] = {}
        for item in items:
            if item.custom_id in self.items:
                raise DataError(f"custom_id {item.custom_id!r} appears twice in the batch")
            spec = client.resolve(item.model)
            name = spec.provider
            if name not in self.apis:
                kind = client.config.provider_settings(name).type or name
                if kind not in BATCH_KINDS:
                    raise UnknownProvider(
                        f"provider {name!r} (type {kind!r}) has no batch API in ponder; --provider-batch "
                        f"supports providers of type {' and '.join(BATCH_KINDS)}")
                p = client.provider(name)  # the SDKProvider, under the Client's CachedProvider if any
                self.apis[name] = BatchAPI(getattr(p, "provider", p), kind)
            if self.apis[spec.provider].kind == "anthropic" and (item.request.n or 1) > 1:
                raise ConfigError(f"{item.custom_id}: n > 1 is not supported in an Anthropic batch")
            self.items[item.custom_id] = (spec, item.request)
        self.failed: dict[str, PonderError] = {}
        for cid, (spec, request) in self.items.items():  # a known custom id must ask the same
            known = state.requests.get(cid)
            if known is not None and known != _fingerprint(spec, request):
                raise ConfigError(
                    f"custom_id {cid!r} asks something other than what {state.path} recorded "
                    "for it; use another state file to start over", file=str(state.path))

    def progress(self) -> None:
        if self.on_progress is not None:
            done = sum(1 for cid in self.items if cid in self.state.done or cid in self.failed)
            self.on_progress(done, len(self.items))

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
            for chunk in chunks(api.kind, rows):
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
        """Upload (OpenAI) and create the chunk's batch, saving each id as it exists."""
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
        except Refused as refused:  # no batch exists: nothing to look for on resume
            entry["create_intent_at"] = None
            self.state.save()
            raise refused.error from None
        entry["submitted_at"] = time.time()
        self.state.save()
        self.progress()

    def adopt(self, entry: dict[str, Any]) -> bool:
        """Whether a batch an earlier run created for ``entry`` without saving its id was found."""
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
            # a chunk stopped before its create, or after it before its id was saved (``adopt``)
            if entry["batch_id"] or entry["provider"] not in self.apis or self.adopt(entry):
                continue
            if any(cid not in self.items for cid in entry["custom_ids"]):
                entry["fetched"] = True  # never submitted, and no longer asked for
                self.state.save()
            else:
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
            if not any(e["provider"] in self.apis for e in self.open_chunks()):
                break
            time.sleep(self.poll_s)

    def fetch(self, api: BatchAPI, entry: dict[str, Any], batch: Any) -> None:
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
                request = self.items[cid][1] if cid in self.items else ChatRequest(messages=())
                try:
                    completion = api.price(answer, request, model, latency)
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
    """Every custom id's Completion (at the batch rate) or error (retryable ones go once more in a new
    batch if ``retry_failed``); the batch API's own errors raise."""
    state = _State(Path(state_path))
    run = _Run(client, items, state, poll_s, on_progress)
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
