"""Answers as OpenAI bodies: one ``chat.completion`` JSON, or ``chat.completion.chunk`` server-sent
events (tool calls, ``n`` choices, logprobs, usage)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi.responses import Response

from .._types import Answer, Choice, Completion

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def _finish(reason: str | None) -> str:
    return _FINISH.get(reason or "stop", reason or "stop")


def _message(ch: Choice) -> dict[str, Any]:
    """One answer as OpenAI's ``message``: ``content`` null on a turn that only calls tools."""
    msg: dict[str, Any] = {"role": "assistant",
                           "content": None if ch.tool_calls and not ch.content else ch.text,
                           "refusal": ch.refusal}
    if ch.tool_calls:
        msg["tool_calls"] = list(ch.tool_calls)
    return msg


def ponder_info(answer: Answer) -> dict[str, Any]:
    c = answer.completion
    return {"model": c.spec, "cost_usd": answer.cost_usd, "cached": c.cached, "saved_usd": c.saved_usd,
            "strategy": answer.strategy,
            "trace": [a.model_dump(exclude={"response"}) for a in answer.trace]}


def _usage(c: Completion) -> dict[str, Any]:
    u = c.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}}


def _headers(answer: Answer) -> dict[str, str]:
    return {"x-ponder-model": answer.completion.spec,
            "x-ponder-cost-usd": format(answer.cost_usd, ".10g"),
            "x-ponder-cached": "true" if answer.completion.cached else "false"}


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def completion_response(answer: Answer) -> Response:
    """A ``chat.completion`` body, with the ``x-ponder-*`` headers."""
    c = answer.completion
    payload = {
        "id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()),
        "model": c.spec,
        "choices": [{"index": i, "message": _message(ch), "logprobs": ch.logprobs,
                     "finish_reason": _finish(ch.finish_reason or c.finish_reason)}
                    for i, ch in enumerate(c.answers())],
        "usage": _usage(c), "ponder": ponder_info(answer),
    }
    return Response(_json(payload), media_type="application/json", headers=_headers(answer))


class Chunks:
    """The ``data:`` lines of one streamed answer (``chat.completion.chunk`` objects)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())

    def chunk(self, delta: dict[str, Any], finish: str | None = None, index: int = 0,
              logprobs: dict[str, Any] | None = None, **extra: Any) -> str:
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return self.data({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                          "model": self.model, "choices": [choice], **extra})

    def rest(self, answer: Answer, include_usage: bool) -> Iterator[str]:
        """After choice 0's text has streamed: its tool calls (one delta each, with ``index``, id,
        name and the whole arguments), every other choice whole, each choice's finish (choice 0's
        last, with the ``ponder`` field), the usage when asked for, and ``[DONE]``."""
        c = answer.completion
        answers = c.answers()
        for i, ch in enumerate(answers):
            if i:
                yield self.chunk({"role": "assistant", "content": ch.content if ch.content else
                                  (None if ch.tool_calls else "")}, index=i)
            if ch.tool_calls:
                yield self.chunk({"tool_calls": [{"index": j, **call} for j, call in enumerate(ch.tool_calls)]},
                                 index=i)
            if ch.refusal is not None:
                yield self.chunk({"refusal": ch.refusal}, index=i)
        for i, ch in enumerate(answers[1:], start=1):
            yield self.chunk({}, _finish(ch.finish_reason or c.finish_reason), index=i, logprobs=ch.logprobs)
        yield self.chunk({}, _finish(answers[0].finish_reason or c.finish_reason),
                         logprobs=answers[0].logprobs, ponder=ponder_info(answer))
        if include_usage:
            yield self.data({"id": self.id, "object": "chat.completion.chunk",
                             "created": self.created, "model": self.model, "choices": [],
                             "usage": _usage(c)})
        yield "data: [DONE]\n\n"

    @staticmethod
    def data(obj: Any) -> str:
        return "data: " + _json(obj) + "\n\n"
