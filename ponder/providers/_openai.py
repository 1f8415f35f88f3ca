"""OpenAI and every OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp) via ``base_url``."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .._exceptions import AuthError, BadResponse
from .._pricing import PriceTable
from .._types import ChatRequest, Completion, Usage
from ._base import Reply, RetryPolicy, SDKProvider
from ._errors import translate_sdk_error


def _usage(u: Any) -> Usage | None:
    if u is None:
        return None
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return Usage(input_tokens=int(u.prompt_tokens or 0), output_tokens=int(u.completion_tokens or 0),
                 cached_input_tokens=int(cached))


class OpenAIProvider(SDKProvider):
    name = "openai"

    def __init__(
        self, *, api_key: str | None = None, base_url: str | None = None, timeout_s: float = 60.0,
        retry: RetryPolicy | None = None, max_concurrency: int = 16, prices: PriceTable | None = None,
        name: str = "openai", api_key_env: str = "OPENAI_API_KEY",
    ) -> None:
        super().__init__(prices=prices, retry=retry, max_concurrency=max_concurrency)
        self.name = name
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get(api_key_env)
        if not key:
            if self.base_url is None:
                raise AuthError(f"no API key: set {api_key_env} or providers.{name}.api_key",
                                provider=name)
            key = "not-needed"  # self-hosted OpenAI-compatible servers usually ignore it
        self._key = key
        self.timeout_s = timeout_s

    @property
    def endpoint(self) -> str:
        return self.base_url or "https://api.openai.com/v1"

    def _kwargs(self) -> dict[str, Any]:
        return {"api_key": self._key, "base_url": self.base_url, "timeout": self.timeout_s,
                "max_retries": 0}

    def _sdk_client(self, asynchronous: bool) -> Any:
        import openai

        return (openai.AsyncOpenAI if asynchronous else openai.OpenAI)(**self._kwargs())

    def _params(self, request: ChatRequest, model: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        s = request.sampling()
        for key in ("temperature", "top_p", "seed", "max_tokens"):
            if key in s:
                params[key] = s[key]
        if "stop" in s:
            params["stop"] = list(s["stop"])
        return params

    def _reply(self, resp: Any, model: str) -> Reply:
        try:
            choice = resp.choices[0]
            text = choice.message.content or ""
        except (AttributeError, IndexError, TypeError):
            raise BadResponse("response has no choices", provider=self.name, model=model) from None
        return Reply(text=text, usage=_usage(getattr(resp, "usage", None)),
                     finish_reason=getattr(choice, "finish_reason", None))

    def _err(self, exc: Exception, model: str) -> Exception:
        return translate_sdk_error(exc, provider=self.name, model=model, secret=self._key)

    def _send(self, request: ChatRequest, model: str) -> Reply:
        try:
            resp = self.client.chat.completions.create(**self._params(request, model))
            return self._reply(resp, model)
        except BadResponse:
            raise
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise self._err(exc, model) from None

    async def _asend(self, request: ChatRequest, model: str) -> Reply:
        try:
            resp = await self.aclient.chat.completions.create(**self._params(request, model))
            return self._reply(resp, model)
        except BadResponse:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._err(exc, model) from None

    # Streaming: one chunk-folding step shared by the sync and async loops.
    class _Fold:
        def __init__(self) -> None:
            self.parts: list[str] = []
            self.usage: Usage | None = None
            self.finish: str | None = None
            self.start = time.perf_counter()

        def add(self, chunk: Any) -> str:
            if getattr(chunk, "usage", None):
                self.usage = _usage(chunk.usage)
            text = ""
            for ch in chunk.choices or []:
                if ch.delta and ch.delta.content:
                    text += ch.delta.content
                self.finish = ch.finish_reason or self.finish
            if text:
                self.parts.append(text)
            return text

    def _finish(self, fold: _Fold, request: ChatRequest, model: str) -> Completion:
        if not fold.parts and fold.usage is None and fold.finish is None:  # e.g. JSON, not SSE
            raise BadResponse("stream ended without any event", provider=self.name, model=model)
        reply = Reply("".join(fold.parts), fold.usage, fold.finish)
        return self._price(request, model, reply, time.perf_counter() - fold.start)

    def stream(self, request: ChatRequest, model: str) -> Iterator[str | Completion]:
        fold = self._Fold()
        try:
            with self._sync_slots:
                for chunk in self.client.chat.completions.create(
                    **self._params(request, model), stream=True, stream_options={"include_usage": True}
                ):
                    if text := fold.add(chunk):
                        yield text
        except Exception as exc:  # noqa: BLE001
            raise self._err(exc, model) from None
        yield self._finish(fold, request, model)

    async def astream(self, request: ChatRequest, model: str) -> AsyncIterator[str | Completion]:
        fold = self._Fold()
        try:
            async with self._slots():
                stream = await self.aclient.chat.completions.create(
                    **self._params(request, model), stream=True, stream_options={"include_usage": True}
                )
                async for chunk in stream:
                    if text := fold.add(chunk):
                        yield text
        except Exception as exc:  # noqa: BLE001
            raise self._err(exc, model) from None
        yield self._finish(fold, request, model)
