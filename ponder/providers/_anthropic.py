"""Anthropic's Messages API through the official SDK."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator
from typing import Any

from .._exceptions import BadResponse
from .._pricing import PriceTable
from .._types import ChatRequest, Usage
from ._base import NO_KEY, Reply, RetryPolicy, SDKProvider, resolve_key

DEFAULT_MAX_TOKENS = 1024  # the Messages API requires max_tokens
OFFICIAL_URLS = ("https://api.anthropic.com",)


def _usage(u: Any) -> Usage | None:
    if u is None:
        return None
    read = int(getattr(u, "cache_read_input_tokens", 0) or 0)
    created = int(getattr(u, "cache_creation_input_tokens", 0) or 0)
    # Anthropic reports cache reads apart from input_tokens; ponder's input includes them.
    return Usage(input_tokens=int(u.input_tokens or 0) + read + created,
                 output_tokens=int(u.output_tokens or 0), cached_input_tokens=read)


class AnthropicProvider(SDKProvider):
    name = "anthropic"

    def __init__(
        self, *, api_key: str | None = None, base_url: str | None = None, timeout_s: float = 60.0,
        retry: RetryPolicy | None = None, max_concurrency: int = 16, prices: PriceTable | None = None,
        name: str = "anthropic", api_key_env: str | None = None,
    ) -> None:
        super().__init__(prices=prices, retry=retry, max_concurrency=max_concurrency)
        self.name = name
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        self._key = resolve_key(
            provider=name, api_key=api_key, api_key_env=api_key_env, base_url=self.base_url,
            default_env="ANTHROPIC_API_KEY", default_urls=OFFICIAL_URLS, base_url_env="ANTHROPIC_BASE_URL",
        ) or NO_KEY
        self.timeout_s = timeout_s

    @property
    def endpoint(self) -> str:
        return self.base_url or OFFICIAL_URLS[0]

    def _kwargs(self) -> dict[str, Any]:
        # an explicit api_key also stops the SDK from reading ANTHROPIC_AUTH_TOKEN or a profile
        kw: dict[str, Any] = {"api_key": self._key, "timeout": self.timeout_s, "max_retries": 0}
        if self.base_url:
            kw["base_url"] = self.base_url
        return kw

    def _sdk_client(self, asynchronous: bool) -> Any:
        import anthropic

        return (anthropic.AsyncAnthropic if asynchronous else anthropic.Anthropic)(**self._kwargs())

    def _params(self, request: ChatRequest, model: str) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role in ("system", "developer"))
        msgs = [{"role": m.role, "content": m.content} for m in request.messages
                if m.role in ("user", "assistant")]
        s = request.sampling()
        params: dict[str, Any] = {"model": model, "messages": msgs,
                                  "max_tokens": s.get("max_tokens") or DEFAULT_MAX_TOKENS}
        if system:
            params["system"] = system
        # Newer SDKs no longer list sampling parameters as arguments; the API still takes them.
        sampling = {k: s[k] for k in ("temperature", "top_p") if k in s}
        if sampling:
            params["extra_body"] = sampling
        if "stop" in s:
            params["stop_sequences"] = list(s["stop"])
        return params

    def _reply(self, resp: Any, model: str) -> Reply:
        try:
            text = "".join(getattr(b, "text", "") for b in resp.content if getattr(b, "type", "") == "text")
        except (AttributeError, TypeError):
            raise BadResponse("response has no content", provider=self.name, model=model) from None
        return Reply(text=text, usage=_usage(getattr(resp, "usage", None)),
                     finish_reason=getattr(resp, "stop_reason", None))

    def _send(self, request: ChatRequest, model: str) -> Reply:
        try:
            return self._reply(self.client.messages.create(**self._params(request, model)), model)
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise self._err(exc, model) from None

    async def _asend(self, request: ChatRequest, model: str) -> Reply:
        try:
            return self._reply(await self.aclient.messages.create(**self._params(request, model)), model)
        except Exception as exc:  # noqa: BLE001
            raise self._err(exc, model) from None

    def _wire_stream(self, request: ChatRequest, model: str) -> Generator[str | Reply, None, None]:
        try:
            with self.client.messages.stream(**self._params(request, model)) as s:
                yield from s.text_stream
                final = s.get_final_message()
            yield self._final(final)
        except Exception as exc:  # noqa: BLE001
            raise self._err(exc, model) from None

    async def _awire_stream(self, request: ChatRequest, model: str) -> AsyncGenerator[str | Reply, None]:
        try:
            async with self.aclient.messages.stream(**self._params(request, model)) as s:
                async for text in s.text_stream:
                    yield text
                final = await s.get_final_message()
            yield self._final(final)
        except Exception as exc:  # noqa: BLE001
            raise self._err(exc, model) from None

    @staticmethod
    def _final(message: Any) -> Reply:
        text = "".join(getattr(b, "text", "") for b in message.content if getattr(b, "type", "") == "text")
        return Reply(text, _usage(message.usage), message.stop_reason)
