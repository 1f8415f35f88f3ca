"""Anthropic's Messages API through the official SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Generator
from typing import Any

from .._exceptions import BadResponse, UnsupportedRequest
from .._types import ChatRequest, Choice, Usage
from ._base import Reply, SDKProvider

DEFAULT_MAX_TOKENS = 1024  # the Messages API requires max_tokens


def _usage(u: Any) -> Usage | None:
    if u is None:
        return None
    read = int(getattr(u, "cache_read_input_tokens", 0) or 0)
    created = int(getattr(u, "cache_creation_input_tokens", 0) or 0)
    # Anthropic reports cache reads apart from input_tokens; ponder's input includes them.
    return Usage(input_tokens=int(u.input_tokens or 0) + read + created,
                 output_tokens=int(u.output_tokens or 0), cached_input_tokens=read)


class AnthropicProvider(SDKProvider):
    """Chat Completions as Messages API calls (JSON answers through a forced tool, ``n`` by n calls)."""

    name = "anthropic"
    sdk = "anthropic.Anthropic"
    env = "ANTHROPIC"
    official_urls = ("https://api.anthropic.com",)
    accepts = frozenset({"temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n",
                         "tools", "tool_choice", "parallel_tool_calls", "response_format", "user"})
    parts = frozenset({"text", "image_url"})

    def _reply(self, resp: Any, model: str, forced: str | None = None) -> Reply:
        try:
            choice = _choice(resp, forced)
        except (AttributeError, TypeError, ValueError):
            raise BadResponse("response has no content", provider=self.name, model=model) from None
        return Reply(text=choice.text, usage=_usage(getattr(resp, "usage", None)),
                     finish_reason=getattr(resp, "stop_reason", None), choices=(choice,))

    def _send(self, request: ChatRequest, model: str) -> Reply:
        params, forced = self._split(request, model)
        return _merge([self._reply(self.client.messages.create(**params), model, forced)
                       for _ in range(request.n or 1)])

    async def _asend(self, request: ChatRequest, model: str) -> Reply:
        params, forced = self._split(request, model)
        replies = await asyncio.gather(*(self.aclient.messages.create(**params)
                                         for _ in range(request.n or 1)))
        return _merge([self._reply(r, model, forced) for r in replies])

    def _split(self, request: ChatRequest, model: str,
               stream: bool = False) -> tuple[dict[str, Any], str | None]:
        """The Messages API parameters, and the name of the tool forced to carry a JSON answer."""
        if stream and (request.n or 1) > 1:
            raise UnsupportedRequest("'n' > 1 cannot be streamed from Anthropic (it is answered by n "
                                     "calls); send stream: false", param="n", provider=self.name, model=model)
        try:  # ``accepts`` refused the fields without a counterpart; ``_bad`` names no provider
            params = _params(request, model)
        except UnsupportedRequest as exc:
            raise UnsupportedRequest(exc.reason, param=exc.param, provider=self.name, model=model) from None
        return params, params.pop(_FORCED, None)

    def _wire_stream(self, request: ChatRequest, model: str) -> Generator[str | Reply, None, None]:
        params, forced = self._split(request, model, stream=True)
        with self.client.messages.stream(**params) as s:
            if forced is None:
                yield from s.text_stream
            final = s.get_final_message()
        yield self._reply(final, model, forced)

    async def _awire_stream(self, request: ChatRequest, model: str) -> AsyncGenerator[str | Reply, None]:
        params, forced = self._split(request, model, stream=True)
        async with self.aclient.messages.stream(**params) as s:
            if forced is None:
                async for text in s.text_stream:
                    yield text
            final = await s.get_final_message()
        yield self._reply(final, model, forced)


# --- Chat Completions → Messages API ---------------------------------------------------------------
_FORCED = "_ponder_forced_tool"  # the params key naming the tool that carries a JSON answer
_JSON_TOOL = "json_answer"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "refusal": "content_filter", "pause_turn": "stop"}


def _bad(message: str, param: str) -> UnsupportedRequest:
    return UnsupportedRequest(message, param=param)


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    """An ``image_url`` part as an Anthropic image block (a data URI as base64, else a URL source)."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise _bad("an image_url part needs image_url.url", where)
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        media, _, encoding = head.partition(";")
        if not sep or encoding != "base64":
            raise _bad("a data URI image must be base64 (data:<type>;base64,<data>)", where)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any, where: str) -> str | list[dict[str, Any]]:
    """Message content as Anthropic content: a string, or text and image blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            out.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            out.append(_image(part, f"{where}[{j}]"))
        else:
            raise _bad(f"content part type '{kind}' is not supported by Anthropic", f"{where}[{j}]")
    return out


def _tool_use(call: dict[str, Any], where: str) -> dict[str, Any]:
    fn = call.get("function") or {}
    try:
        args = json.loads(fn.get("arguments") or "{}")
    except (TypeError, ValueError):
        raise _bad("tool call arguments must be a JSON object", f"{where}.function.arguments") from None
    return {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args}


def _turns(request: ChatRequest) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, messages); consecutive ``tool`` results merged into one user turn (as required)."""
    system: list[str] = []
    msgs: list[dict[str, Any]] = []
    for i, m in enumerate(request.messages):
        where = f"messages[{i}]"
        if m.name is not None:
            raise _bad("a message 'name' has no Anthropic counterpart; leave it out", f"{where}.name")
        if m.role in ("system", "developer"):
            system.append(m.text)
        elif m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id,
                     "content": _blocks(m.content, f"{where}.content")}
            last = msgs[-1] if msgs else None
            if (last is not None and last["role"] == "user" and isinstance(last["content"], list)
                    and all(b.get("type") == "tool_result" for b in last["content"])):
                last["content"].append(block)
            else:
                msgs.append({"role": "user", "content": [block]})
        elif m.role == "assistant" and m.tool_calls:
            content = _blocks(m.content, f"{where}.content")
            blocks = ([{"type": "text", "text": content}] if isinstance(content, str) and content
                      else [] if isinstance(content, str) else content)
            blocks += [_tool_use(c, f"{where}.tool_calls[{j}]")
                       for j, c in enumerate(m.tool_calls)]
            msgs.append({"role": "assistant", "content": blocks})
        else:
            msgs.append({"role": m.role, "content": _blocks(m.content, f"{where}.content")})
    return "\n\n".join(system), msgs


def _tool_choice(choice: Any, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice in ("auto", "required", "none"):
        out = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _bad("tool_choice must be auto, required, none or a named function", "tool_choice")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _json_tool(fmt: dict[str, Any]) -> dict[str, Any] | None:
    """The forced tool that carries a ``response_format`` answer (None for ``text``)."""
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"name": _JSON_TOOL, "description": "Answer with a JSON object.",
                "input_schema": {"type": "object", "additionalProperties": True}}
    if kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") or {"type": "object"}
        if schema.get("type") != "object":
            raise _bad("Anthropic answers JSON through a tool, whose schema must be an object",
                       "response_format.json_schema.schema")
        return {"name": _JSON_TOOL, "description": str(spec.get("description") or "Answer in this schema."),
                "input_schema": schema}
    raise _bad(f"response_format type {kind!r} is not supported", "response_format.type")


def _params(request: ChatRequest, model: str) -> dict[str, Any]:
    system, msgs = _turns(request)
    params: dict[str, Any] = {"model": model, "messages": msgs,
                              "max_tokens": request.answer_tokens or DEFAULT_MAX_TOKENS}
    if system:
        params["system"] = system
    # Newer SDKs no longer list sampling parameters as arguments; the API still takes them.
    sampling = {k: v for k, v in (("temperature", request.temperature), ("top_p", request.top_p))
                if v is not None}
    if sampling:
        params["extra_body"] = sampling
    if request.stop:
        params["stop_sequences"] = list(request.stop)
    if request.user:
        params["metadata"] = {"user_id": request.user}
    if request.tools:
        tools = []
        for j, t in enumerate(request.tools):
            fn = t.get("function") if t.get("type") == "function" else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _bad("only function tools are supported", f"tools[{j}]")
            tools.append({"name": fn["name"], "description": str(fn.get("description") or ""),
                          "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}})
        params["tools"] = tools
    choice = _tool_choice(request.tool_choice, request.parallel_tool_calls)
    if choice is not None:
        params["tool_choice"] = choice
    if request.response_format:
        forced = _json_tool(request.response_format)
        if forced is not None:
            if request.tools:
                raise _bad("response_format with tools is not supported by Anthropic", "response_format")
            params["tools"] = [forced]
            params["tool_choice"] = {"type": "tool", "name": forced["name"]}
            params[_FORCED] = forced["name"]
    return params


def _choice(resp: Any, forced: str | None) -> Choice:
    """One Messages API answer as a Chat Completions choice (a forced JSON tool's input as content)."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for b in resp.content:
        kind = getattr(b, "type", "")
        if kind == "text":
            text.append(b.text)
        elif kind == "tool_use":
            if forced is not None and b.name == forced:
                text.append(json.dumps(b.input, ensure_ascii=False))
            else:
                calls.append({"id": b.id, "type": "function",
                              "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)}})
    stop = getattr(resp, "stop_reason", None)
    finish = "stop" if forced is not None and stop == "tool_use" else _FINISH.get(stop or "", stop)
    content = "".join(text)
    return Choice(content=content or (None if calls else ""), tool_calls=tuple(calls), finish_reason=finish,
                  refusal="refused" if stop == "refusal" else None)


def _merge(replies: list[Reply]) -> Reply:
    """``n`` answers from ``n`` calls: every choice, usage summed."""
    if len(replies) == 1:
        return replies[0]
    usage = [r.usage for r in replies]
    total = None if any(u is None for u in usage) else Usage(
        input_tokens=sum(u.input_tokens for u in usage if u), output_tokens=sum(u.output_tokens for u in usage if u),
        cached_input_tokens=sum(u.cached_input_tokens for u in usage if u))
    choices = tuple(c for r in replies for c in r.choices)
    return Reply(replies[0].text, total, replies[0].finish_reason, samples=tuple(c.text for c in choices),
                 choices=choices)
