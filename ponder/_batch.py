"""Answer every row (``prompt``, ``query`` or ``messages``, or OpenAI batch format) of a JSONL file with a
strategy, N at a time; each result is one flushed line, so a rerun skips the answered rows."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from ._exceptions import DataError, PonderError
from ._jsonl import iter_jsonl, iter_log
from ._types import ChatRequest, Completion
from .strategies import as_live

# A row's Chat Completions fields (tools, response_format, n, ...) are sent as written; any other
# key of a row is the row's own (its id, metadata) and is not sent.
_PARAMS = tuple(f for f in ChatRequest.model_fields if f != "messages")


@dataclass(frozen=True)
class BatchRow:
    id: str
    request: ChatRequest


@dataclass
class BatchSummary:
    """What a run did (``skipped``: rows already answered in the output file)."""

    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    cached: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    elapsed_s: float = 0.0
    stopped: str | None = None  # why the run stopped early (budget), else None
    errors: dict[str, int] = field(default_factory=dict)  # error type -> rows

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done - self.failed

    def count(self, result: Completion | BaseException, cost_usd: float | None = None) -> None:
        """Count one finished call's completion (``cost_usd``: if not its own) or error."""
        if isinstance(result, BaseException):
            self.failed += 1
            self.errors[type(result).__name__] = self.errors.get(type(result).__name__, 0) + 1
            return
        self.done += 1
        self.cost_usd += result.cost_usd if cost_usd is None else cost_usd
        self.saved_usd += result.saved_usd
        self.cached += int(result.cached)


def _row_request(obj: dict[str, Any], path: Path, line: int) -> ChatRequest:
    inner = obj.get("body")
    body: dict[str, Any] = inner if isinstance(inner, dict) else obj
    params = {k: body[k] for k in _PARAMS if body.get(k) is not None}
    if "messages" in body:
        messages, column = body["messages"], "messages"
    elif "prompt" in body or "query" in body:
        column = "prompt" if "prompt" in body else "query"
        messages = body[column]
        if not isinstance(messages, str):
            raise DataError("must be a string", file=str(path), row=line, column=column)
    else:
        raise DataError("needs 'prompt', 'query' or 'messages'", file=str(path), row=line)
    try:
        return ChatRequest.of(messages, **params)
    except (ValidationError, TypeError, ValueError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        loc = ".".join(str(p) for p in first["loc"]) or column
        raise DataError(str(first["msg"]), file=str(path), row=line, column=loc) from None


def read_rows(path: str | Path) -> list[BatchRow]:
    """Parse and validate every input row first, so a bad file fails before anything is paid."""
    path = Path(path)
    rows: list[BatchRow] = []
    seen: dict[str, int] = {}
    for line, obj in iter_jsonl(path):
        rid = str(next((obj[k] for k in ("id", "custom_id", "query_id") if obj.get(k) is not None), line))
        if rid in seen:
            raise DataError(f"duplicate id {rid!r} (first on line {seen[rid]})", file=str(path),
                            row=line, column="id")
        seen[rid] = line
        rows.append(BatchRow(rid, _row_request(obj, path, line)))
    return rows


def read_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """The last record per id in an output file; a torn line is dropped (its row asked again)."""
    return {str(rec["id"]): rec for _, rec in iter_log(path) if isinstance(rec, dict) and "id" in rec}


def error_text(exc: BaseException) -> str:
    """An error on one line of at most 1,000 characters, as records keep it."""
    return " ".join(str(exc).split())[:1000]


class _Writer:
    """Appends one flushed JSON line per result; keeps earlier good results on resume."""

    def __init__(self, path: Path, keep: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for rec in keep:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, path)  # atomic: the old file or the compacted one, never half of each
        self.handle = path.open("a", encoding="utf-8")

    def write(self, rec: dict[str, Any]) -> None:
        self.handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


T = TypeVar("T")


async def drain(items: Sequence[T], step: Callable[[T], Awaitable[Iterable[T]]],
                summary: BatchSummary, *, concurrency: int, max_cost: float | None) -> None:
    """``step`` on every item (and those it hands back), ``concurrency`` at a time, until ``max_cost``."""
    queue: asyncio.Queue[T] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            if max_cost is not None and summary.cost_usd >= max_cost:
                summary.stopped = f"budget of ${max_cost:g} reached"
                return
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            for more in await step(item):
                queue.put_nowait(more)

    await asyncio.gather(*[worker() for _ in range(min(concurrency, max(1, len(items))))])


async def arun_batch(
    input_path: str | Path,
    output_path: str | Path,
    strategy: Any,
    client: Any,
    *,
    concurrency: int = 8,
    retry_failed: bool = True,
    max_cost_usd: float | None = None,
    on_start: Callable[[BatchSummary], None] | None = None,
    on_result: Callable[[dict[str, Any], BatchSummary], None] | None = None,
) -> BatchSummary:
    """Answer every row not yet answered in ``output_path``; returns what this run did."""
    if concurrency < 1:
        raise PonderError("concurrency must be at least 1")
    live = as_live(strategy)
    rows = read_rows(input_path)
    previous = read_results(output_path)
    ids = {r.id for r in rows}
    finished = {i for i, rec in previous.items() if rec.get("error") is None or not retry_failed}
    keep = [rec for i, rec in previous.items() if i in finished or i not in ids]
    todo = [r for r in rows if r.id not in finished]
    summary = BatchSummary(total=len(rows), skipped=len(rows) - len(todo))
    if on_start is not None:
        on_start(summary)
    writer = _Writer(Path(output_path), keep)
    start = time.perf_counter()

    async def one(row: BatchRow) -> list[BatchRow]:
        try:
            answer = await live.arun(row.request, client)
        except PonderError as exc:
            provider, model = getattr(exc, "provider", ""), getattr(exc, "model", "")
            spec = f"{provider}:{model}" if provider and model else (model or None)
            rec = {"id": row.id, "text": None, "model": spec, "cost_usd": 0.0, "cached": False,
                   "error": error_text(exc), "error_type": type(exc).__name__}
            summary.count(exc)
        else:
            c, trace = answer.completion, answer.trace
            rec = {"id": row.id, "text": c.text, "model": c.spec, "cost_usd": answer.cost_usd,
                   "cached": c.cached, "saved_usd": c.saved_usd, "cost_estimated": c.cost_estimated,
                   "latency_s": round(c.latency_s, 6), "usage": c.usage.model_dump(),
                   "finish_reason": c.finish_reason, "strategy": answer.strategy,
                   "trace": [a.model_dump(exclude={"response"}) for a in trace] if len(trace) > 1 else [],
                   "error": None}
            summary.count(c, answer.cost_usd)
        writer.write(rec)
        summary.elapsed_s = time.perf_counter() - start
        if on_result is not None:
            on_result(rec, summary)
        return []

    try:
        await drain(todo, one, summary, concurrency=concurrency, max_cost=max_cost_usd)
    finally:
        writer.close()
        summary.elapsed_s = time.perf_counter() - start
    return summary


def run_sync(main: Coroutine[Any, Any, T], clients: Callable[[], Iterable[Any]]) -> T:
    """``asyncio.run(main)``, releasing the async connections ``clients()`` opened on that loop
    before it closes, so the same clients work again afterwards."""
    async def run() -> T:
        try:
            return await main
        finally:
            for client in {id(c): c for c in clients() if c is not None}.values():
                release = getattr(client, "aclose", None)
                if release is not None:
                    await release()

    return asyncio.run(run())


def run_batch(input_path: str | Path, output_path: str | Path, strategy: Any, client: Any,
              **kw: Any) -> BatchSummary:
    """The synchronous twin of :func:`arun_batch` (see :func:`run_sync`)."""
    return run_sync(arun_batch(input_path, output_path, strategy, client, **kw), lambda: [client])
