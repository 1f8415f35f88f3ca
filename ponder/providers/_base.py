"""The Provider protocol, and the retry/backoff/concurrency machinery every real provider shares.

Retries live here, not in the SDKs (their own retries are switched off), so that every provider
honours ``Retry-After`` and the same backoff, and so that one pure function decides.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .._exceptions import ProviderError, ProviderTimeout, ProviderUnavailable, RateLimited
from .._pricing import PriceTable, price_completion
from .._types import ChatRequest, Completion, Usage

RETRYABLE = (RateLimited, ProviderTimeout, ProviderUnavailable)


@runtime_checkable
class Provider(Protocol):
    """Anything that answers a chat request with a priced Completion."""

    name: str

    def complete(self, request: ChatRequest, model: str) -> Completion: ...

    async def acomplete(self, request: ChatRequest, model: str) -> Completion: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    initial_s: float = 0.5
    max_s: float = 30.0
    jitter: float = 0.25  # +-25% of the delay


def retry_delay(
    policy: RetryPolicy, attempt: int, error: Exception, rng: random.Random | None = None
) -> float | None:
    """Seconds to wait before retry number ``attempt`` (1-based), or None to give up.

    Exponential backoff with jitter; a server's ``Retry-After`` wins when it is longer.
    """
    if not isinstance(error, RETRYABLE) or attempt > policy.max_retries:
        return None
    u = (rng or random).random()
    delay = min(policy.max_s, policy.initial_s * (2 ** (attempt - 1)))
    delay *= 1.0 + policy.jitter * (2.0 * u - 1.0)
    if isinstance(error, RateLimited) and error.retry_after is not None:
        delay = max(delay, min(error.retry_after, policy.max_s))
    return max(0.0, delay)


@dataclass(frozen=True)
class Reply:
    """What a provider's wire call produced, before pricing."""

    text: str
    usage: Usage | None
    finish_reason: str | None
    model: str | None = None


_KEYISH = re.compile(r"(sk-[A-Za-z0-9_\-*]{4,}|[A-Za-z0-9_\-]{0,8}\*{3,}[A-Za-z0-9_\-]{0,8})")


def scrub(message: str, secret: str | None) -> str:
    """Remove a credential (and anything that looks like a masked key) from an error message."""
    if secret:
        message = message.replace(secret, "[redacted]")
    return _KEYISH.sub("[redacted]", message)


class WholeTextStream:
    """Streaming for providers that answer in one piece: the whole text as one delta, then the
    Completion (the shape every provider's ``stream``/``astream`` yields). Providers with a real
    wire stream override both."""

    def complete(self, request: ChatRequest, model: str) -> Completion:
        raise NotImplementedError

    async def acomplete(self, request: ChatRequest, model: str) -> Completion:
        raise NotImplementedError

    def stream(self, request: ChatRequest, model: str) -> Iterator[str | Completion]:
        comp = self.complete(request, model)
        yield comp.text
        yield comp

    async def astream(self, request: ChatRequest, model: str) -> AsyncIterator[str | Completion]:
        comp = await self.acomplete(request, model)
        yield comp.text
        yield comp


class BaseProvider(WholeTextStream):
    """Retries, timeouts, a per-provider concurrency limit and pricing around ``_send``/``_asend``."""

    name = "base"

    def __init__(
        self, *, prices: PriceTable | None = None, retry: RetryPolicy | None = None,
        max_concurrency: int = 16,
    ) -> None:
        self.prices = prices or PriceTable.default()
        self.retry = retry or RetryPolicy()
        self.max_concurrency = max_concurrency
        self._sync_slots = threading.BoundedSemaphore(max_concurrency)
        self._async_slots: dict[int, asyncio.Semaphore] = {}
        self._rng = random.Random()

    # --- to implement -------------------------------------------------------------------
    def _send(self, request: ChatRequest, model: str) -> Reply:
        raise NotImplementedError

    async def _asend(self, request: ChatRequest, model: str) -> Reply:
        raise NotImplementedError

    @property
    def endpoint(self) -> str:
        """Where answers come from (part of the cache key; never a credential)."""
        return ""

    # --- shared -------------------------------------------------------------------------
    def _price(self, request: ChatRequest, model: str, reply: Reply, latency: float) -> Completion:
        return price_completion(
            self.prices, provider=self.name, model=model, usage=reply.usage,
            prompt_text="\n".join(m.content for m in request.messages), text=reply.text,
            latency_s=latency, finish_reason=reply.finish_reason,
        )

    def _slots(self) -> asyncio.Semaphore:
        loop_id = id(asyncio.get_running_loop())
        sem = self._async_slots.get(loop_id)
        if sem is None:
            sem = self._async_slots[loop_id] = asyncio.Semaphore(self.max_concurrency)
        return sem

    def complete(self, request: ChatRequest, model: str) -> Completion:
        start = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._sync_slots:
                    reply = self._send(request, model)
                return self._price(request, model, reply, time.perf_counter() - start)
            except ProviderError as exc:
                delay = retry_delay(self.retry, attempt, exc, self._rng)
                if delay is None:
                    raise
                time.sleep(delay)

    async def acomplete(self, request: ChatRequest, model: str) -> Completion:
        start = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._slots():
                    reply = await self._asend(request, model)
                return self._price(request, model, reply, time.perf_counter() - start)
            except ProviderError as exc:
                delay = retry_delay(self.retry, attempt, exc, self._rng)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        self.close()


class SDKProvider(BaseProvider):
    """A provider over an official SDK: its sync and async clients are built on first use (never
    at import) and closed together."""

    _client: Any = None
    _aclient: Any = None

    def _sdk_client(self, asynchronous: bool) -> Any:
        raise NotImplementedError

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._sdk_client(asynchronous=False)
        return self._client

    @property
    def aclient(self) -> Any:
        if self._aclient is None:
            self._aclient = self._sdk_client(asynchronous=True)
        return self._aclient

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        self.close()
        if self._aclient is not None:
            await self._aclient.close()
            self._aclient = None
