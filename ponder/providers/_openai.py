"""OpenAI and every OpenAI-compatible server via ``base_url``: through the SDK's client, but as JSON
serialized once and answers read from JSON (the SDK's models cost more CPU than the HTTP exchange)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Generator
from typing import Any

from .._exceptions import BadResponse
from .._types import ChatRequest, Choice, LogprobStats, Usage
from ._base import Reply, SDKProvider

BIG_BODY_CHARS = 256 * 1024  # message text (or 4,096 messages) above which the body is built in a thread
# What chat.completions.create sends: the bearer key only (never an admin key from the env).
_OPTIONS: Any = {"security": {"bearer_auth": True}}
_PATH = "/chat/completions"


def _usage(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    details = u.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    out_details = u.get("completion_tokens_details") or {}
    reasoning = out_details.get("reasoning_tokens") if isinstance(out_details, dict) else 0
    return Usage(input_tokens=int(u.get("prompt_tokens") or 0),
                 output_tokens=int(u.get("completion_tokens") or 0), cached_input_tokens=int(cached or 0),
                 reasoning_tokens=int(reasoning or 0))


def _choice(c: dict[str, Any]) -> Choice:
    """One ``choices[i]`` of a chat.completion, whole (content, tool calls, refusal, logprobs)."""
    msg = c["message"]
    content, calls, refusal = msg.get("content"), msg.get("tool_calls") or (), msg.get("refusal")
    if content is not None and not isinstance(content, str):
        raise TypeError
    if not isinstance(calls, (list, tuple)) or not all(isinstance(t, dict) for t in calls):
        raise TypeError
    lp = c.get("logprobs")
    return Choice(content=content, tool_calls=tuple(calls), refusal=refusal if isinstance(refusal, str) else None,
                  finish_reason=c.get("finish_reason"), logprobs=lp if isinstance(lp, dict) else None)


def _logprob_stats(lp: Any) -> LogprobStats | None:
    """Mean and minimum of ``choice.logprobs.content[*].logprob`` (OpenAI, llama.cpp's server)."""
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list):
        return None
    values = [float(t["logprob"]) for t in content
              if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))]
    if not values:
        return None
    return LogprobStats(mean=sum(values) / len(values), min=min(values), tokens=len(values))


def _replied(choices: tuple[Choice, ...], usage: Usage | None, model: str | None = None) -> Reply:
    texts = tuple(c.text for c in choices)
    return Reply(texts[0], usage, choices[0].finish_reason, model=model, choices=choices,
                 samples=texts if len(texts) > 1 else (), logprobs=_logprob_stats(choices[0].logprobs))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def encode_body(params: dict[str, Any], chunk: int = 2048) -> bytes:
    """JSON as the SDK would send it, long message lists a slice at a time (one ``json.dumps`` call
    never releases the GIL, so a thread would stall the event loop just the same)."""
    msgs = params.get("messages")
    if not isinstance(msgs, list) or len(msgs) <= chunk:
        return _dumps(params)
    rest = _dumps({k: v for k, v in params.items() if k != "messages"})
    slices = b",".join(_dumps(msgs[i:i + chunk])[1:-1] for i in range(0, len(msgs), chunk))
    return b'{"messages":[' + slices + (b"]," + rest[1:] if len(rest) > 2 else b"]}")


class OpenAIProvider(SDKProvider):
    name = "openai"
    sdk = "openai.OpenAI"
    env = "OPENAI"
    official_urls = ("https://api.openai.com/v1",)
    supports_n = True  # one request answers ``n`` samples; the input is paid once

    # --- the request: plain dicts, serialized once ------------------------------------------
    def _params(self, request: ChatRequest, model: str, stream: bool = False) -> dict[str, Any]:
        """Every field the client set (unmodelled ones too), plus what streaming needs (usage)."""
        params: dict[str, Any] = {"model": model, "messages": request.wire_messages(), **request.sampling()}
        if params.get("logprobs") and "top_logprobs" not in params:
            params["top_logprobs"] = 0  # llama.cpp's server returns logprobs only when this is set
        if stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        return params

    def _body(self, request: ChatRequest, model: str, stream: bool = False) -> bytes:
        return encode_body(self._params(request, model, stream))

    async def _abody(self, request: ChatRequest, model: str, stream: bool = False) -> bytes:
        msgs = request.messages
        if len(msgs) > 4096 or sum(len(m.text) for m in msgs) > BIG_BODY_CHARS:
            return await asyncio.to_thread(self._body, request, model, stream)
        return self._body(request, model, stream)

    # --- the answer: read from JSON -----------------------------------------------------------
    def _reply(self, raw: bytes, model: str) -> Reply:
        data = json.loads(raw)  # a ValueError becomes BadResponse in translate_sdk_error
        try:
            choices = tuple(map(_choice, sorted(data["choices"], key=lambda c: c.get("index") or 0)))
            if not choices:
                raise TypeError
        except (KeyError, IndexError, TypeError, AttributeError):
            raise BadResponse("response has no choices", provider=self.name, model=model) from None
        return _replied(choices, _usage(data.get("usage")), model=data.get("model"))

    def _send(self, request: ChatRequest, model: str) -> Reply:
        raw = self.client.post(_PATH, body=self._body(request, model), cast_to=bytes, options=_OPTIONS)
        return self._reply(raw, model)

    async def _asend(self, request: ChatRequest, model: str) -> Reply:
        body = await self._abody(request, model)
        raw = await self.aclient.post(_PATH, body=body, cast_to=bytes, options=_OPTIONS)
        return self._reply(raw, model)

    # --- streaming: the SDK's SSE decoding, one chunk-folding step for sync and async ---------
    class _Fold:
        """Folds a stream's chunks into whole answers; only choice 0's text goes on as deltas."""

        def __init__(self) -> None:
            self.usage: Usage | None = None
            self.seen = False
            self.choices: dict[int, dict[str, Any]] = {}  # index -> its text, refusal, calls, ...

        def add(self, chunk: Any) -> str:
            self.seen = True
            if getattr(chunk, "usage", None):
                self.usage = _usage(chunk.usage.model_dump())
            text = ""
            for ch in chunk.choices or []:
                i = getattr(ch, "index", 0) or 0
                c = self.choices.setdefault(
                    i, {"text": [], "refusal": [], "calls": {}, "logprobs": [], "finish": None})
                delta = ch.delta
                if delta is not None:
                    if delta.content:
                        c["text"].append(delta.content)
                        if i == 0:
                            text += delta.content
                    if getattr(delta, "refusal", None):
                        c["refusal"].append(delta.refusal)
                    for tc in getattr(delta, "tool_calls", None) or []:
                        call = c["calls"].setdefault(
                            tc.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                        if tc.id:
                            call["id"] = tc.id
                        if tc.type:
                            call["type"] = tc.type
                        if tc.function is not None:
                            call["function"]["name"] += tc.function.name or ""
                            call["function"]["arguments"] += tc.function.arguments or ""
                lp = getattr(ch, "logprobs", None)
                if lp is not None and getattr(lp, "content", None):
                    c["logprobs"].extend(t.model_dump() for t in lp.content)
                if ch.finish_reason:
                    c["finish"] = ch.finish_reason
            return text

        def reply(self, provider: str, model: str) -> Reply:
            if not self.seen:  # e.g. JSON, not SSE
                raise BadResponse("stream ended without any event", provider=provider, model=model)
            choices = tuple(
                Choice(content="".join(c["text"]) or (None if c["calls"] else ""),
                       tool_calls=tuple(call for _, call in sorted(c["calls"].items())),
                       refusal="".join(c["refusal"]) if c["refusal"] else None,
                       finish_reason=c["finish"],
                       logprobs={"content": c["logprobs"]} if c["logprobs"] else None)
                for _, c in sorted(self.choices.items())) or (Choice(content=""),)
            return _replied(choices, self.usage)

    @staticmethod
    def _stream_kwargs(asynchronous: bool) -> dict[str, Any]:
        """What chat.completions.create(stream=True) passes: SSE decoded into chunk models."""
        import openai
        from openai.types.chat import ChatCompletionChunk

        stream_cls = openai.AsyncStream if asynchronous else openai.Stream
        return {"cast_to": ChatCompletionChunk, "options": _OPTIONS, "stream": True,
                "stream_cls": stream_cls[ChatCompletionChunk]}

    def _wire_stream(self, request: ChatRequest, model: str) -> Generator[str | Reply, None, None]:
        fold = self._Fold()
        with self.client.post(_PATH, body=self._body(request, model, stream=True),
                              **self._stream_kwargs(asynchronous=False)) as chunks:
            for chunk in chunks:
                if text := fold.add(chunk):
                    yield text
        yield fold.reply(self.name, model)

    async def _awire_stream(self, request: ChatRequest, model: str) -> AsyncGenerator[str | Reply, None]:
        fold = self._Fold()
        body = await self._abody(request, model, stream=True)
        kwargs = self._stream_kwargs(asynchronous=True)
        async with await self.aclient.post(_PATH, body=body, **kwargs) as chunks:
            async for chunk in chunks:
                if text := fold.add(chunk):
                    yield text
        yield fold.reply(self.name, model)

