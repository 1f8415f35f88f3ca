"""Answers from a recorded outcome table, so strategies run offline exactly as they run live."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import BadResponse, UnknownModel
from .._types import ChatRequest, Choice, Completion, Usage, json_messages
from ._base import WholeTextStream

if TYPE_CHECKING:
    from ..evaluation import OutcomeTable


def query_key(query: str | ChatRequest) -> str:
    """A query's canonical form (:attr:`ChatRequest.query`); a recorded one maps to itself."""
    if isinstance(query, ChatRequest):
        return query.query
    msgs = json_messages(query)
    if msgs is None:
        return query
    if len(msgs) == 1 and msgs[0].get("role") == "user" and isinstance(msgs[0].get("content"), str):
        return str(msgs[0]["content"])
    return json.dumps([{k: m.get(k) for k in ("role", "content", "parts", "calls") if k in m or k in ("role", "content")}
                       for m in msgs], sort_keys=True, ensure_ascii=False)


class ReplayProvider(WholeTextStream):
    """``replay:<model>`` answers with the recorded response, cost and tokens of that model."""

    def __init__(self, table: OutcomeTable | str | Path, *, name: str = "replay") -> None:
        from ..evaluation import OutcomeTable, read_outcomes

        self.table = table if isinstance(table, OutcomeTable) else read_outcomes(table)
        self.name = name
        self._rows: dict[tuple[str, str], dict[str, Any]] = {
            (query_key(str(rec["query"])), str(rec["model"])): rec
            for rec in self.table.df.to_dict("records")}
        self._models = set(self.table.models)

    @property
    def endpoint(self) -> str:
        return f"replay:{self.table.name}"

    def complete(self, request: ChatRequest, model: str) -> Completion:
        if model not in self._models:
            raise UnknownModel(f"replay table {self.table.name!r} has no model {model!r}; "
                               f"it has: {', '.join(sorted(self._models))}")
        rec = self._rows.get((query_key(request), model))
        if rec is None:
            raise BadResponse("no recorded answer for this query", provider=self.name, model=model)

        def num(key: str) -> float:
            v = rec.get(key)
            return 0.0 if v is None or v != v else float(v)

        from ..evaluation._table import parse_tool_calls

        text = str(rec.get("response") or "")
        try:
            calls = parse_tool_calls(rec.get("tool_calls"))
        except ValueError as exc:
            raise BadResponse(f"the recorded tool_calls cannot be read: {exc}", provider=self.name,
                              model=model) from None
        finish = "tool_calls" if calls else "stop"
        return Completion(
            text=text, model=model, provider=self.name,
            usage=Usage(input_tokens=int(num("input_tokens")), output_tokens=int(num("output_tokens"))),
            cost_usd=float(rec["cost_usd"]), latency_s=num("latency_s"), finish_reason=finish,
            choices=(Choice(content=text or (None if calls else ""), tool_calls=calls, finish_reason=finish),),
        )

    async def acomplete(self, request: ChatRequest, model: str) -> Completion:
        await asyncio.sleep(0)
        return self.complete(request, model)
