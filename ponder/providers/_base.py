"""The Provider protocol, and the retry/backoff/concurrency machinery every real provider shares.

Retries live here, not in the SDKs (their own retries are switched off), so that every provider
honours ``Retry-After`` and the same backoff, and so that one pure function decides
(``retry_delay``). Plain and streamed calls, and the batch APIs' calls, go through the same loop
(``_retried``, and ``_aretried`` for asyncio): a stream is retried like a plain request until its
first text arrives, and never after, since the caller already has it.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from contextlib import aclosing, closing
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from .._exceptions import (
    AuthError,
    BadResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from .._pricing import PriceTable, price_completion
from .._secrets import register_secret
from .._types import ChatRequest, Choice, Completion, LogprobStats, Usage, refuse_unsupported
from ._errors import translate_sdk_error

RETRYABLE = (RateLimited, ProviderTimeout, ProviderUnavailable)
T = TypeVar("T")


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
    u = rng.random() if rng is not None else random.random()
    delay = min(policy.max_s, policy.initial_s * 2.0 ** (attempt - 1))
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
    samples: tuple[str, ...] = ()  # every choice's text when more than one was asked for (``n``)
    logprobs: LogprobStats | None = None
    choices: tuple[Choice, ...] = ()  # every answer whole (tool calls, refusal, logprobs)


NO_KEY = "not-needed"  # what the SDKs get when no key may go to an endpoint (they require a string)


def resolve_key(
    *, provider: str, api_key: str | None, api_key_env: str | None, base_url: str | None,
    default_env: str, default_urls: tuple[str, ...], base_url_env: str,
) -> str | None:
    """The key a provider may send to ``base_url``, or None when it must send none.

    A key goes only where the user pointed it:

    * ``api_key`` or ``api_key_env`` configured for this provider: that key, wherever it points
      (an ``api_key_env`` naming an empty variable is an AuthError, not a silent keyless call);
    * otherwise the default variable (``OPENAI_API_KEY``) only for the default endpoint: the
      vendor's own URL, or the ``OPENAI_BASE_URL`` the user set beside the key in the same
      environment;
    * any other ``base_url`` (a vLLM server, ``--base-url``) gets no key.

    Keys that are used are registered for scrubbing.
    """
    if api_key:
        register_secret(api_key)
        return api_key
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise AuthError(f"providers.{provider}.api_key_env names {api_key_env}, which is empty "
                            "or not set", provider=provider)
        register_secret(key)
        return key
    official = {u.rstrip("/") for u in default_urls}
    paired = (os.environ.get(base_url_env) or "").rstrip("/")  # set beside the key, by the same user
    target = base_url.rstrip("/") if base_url else None
    if target is not None and target not in official and target != paired:
        return None  # a server the user named: the vendor's key is not for it
    key = os.environ.get(default_env)
    if key:
        register_secret(key)
        return key
    if target is None or target in official:
        raise AuthError(f"no API key: set {default_env} or providers.{provider}.api_key", provider=provider)
    return None  # $..._BASE_URL set without a key: a keyless self-hosted server


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


def _final(reply: Reply | None, provider: str, model: str) -> Reply:
    if reply is None:
        raise BadResponse("the answer ended without a final reply", provider=provider, model=model)
    return reply


# One attempt on the wire: text deltas as they arrive, then one final Reply (usage, finish reason).
Wire = Callable[[], Generator["str | Reply", None, None]]
AsyncWire = Callable[[], AsyncGenerator["str | Reply", None]]


class BaseProvider(WholeTextStream):
    """Retries, timeouts, a per-provider concurrency limit and pricing around ``_send``/``_asend``
    (and, for providers with a wire stream, ``_wire_stream``/``_awire_stream``)."""

    name = "base"
    accepts: frozenset[str] | None = None  # request fields honoured; None: all (sent on unchanged)
    parts: frozenset[str] | None = None  # content part types honoured; None: all

    def __init__(
        self, *, prices: PriceTable | None = None, retry: RetryPolicy | None = None,
        max_concurrency: int = 16,
    ) -> None:
        self.prices = prices or PriceTable.default()
        self.retry = retry or RetryPolicy()
        self.max_concurrency = max_concurrency
        self._sync_slots = threading.BoundedSemaphore(max_concurrency)
        # One semaphore per event loop; entries go with their loop (closed loops are pruned too,
        # since a semaphore that ever waited holds its loop).
        self._async_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())
        self._slots_lock = threading.Lock()
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
        # the prompt text is only needed to estimate missing usage
        prompt = "\n".join(m.text for m in request.messages) if reply.usage is None else ""
        return price_completion(
            self.prices, provider=self.name, model=model, usage=reply.usage, prompt_text=prompt,
            text=reply.text, latency_s=latency, finish_reason=reply.finish_reason,
            samples=reply.samples, logprobs=reply.logprobs, choices=reply.choices,
        )

    def _slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._async_slots.get(loop)
        if sem is None:
            with self._slots_lock:
                for old in [lp for lp in self._async_slots.keys() if lp.is_closed()]:
                    del self._async_slots[old]
                sem = self._async_slots.setdefault(loop, asyncio.Semaphore(self.max_concurrency))
        return sem

    def _retried(self, wire: Callable[[], Generator[T, None, None]],
                 policy: RetryPolicy | None = None) -> Generator[T, None, None]:
        """Yield ``wire()``'s items: the one retry loop (live calls, streams, batch API calls).

        A retryable error before the first text delta (a ``str``) backs off (``retry_delay``) and
        runs ``wire`` again, within ``1 + max_retries`` attempts of ``policy`` (default: the
        provider's); after a delta it is raised, since the caller already has the text.
        """
        attempt = 0
        while True:
            attempt += 1
            started = False
            try:
                with self._sync_slots, closing(wire()) as items:
                    for item in items:
                        started = started or isinstance(item, str)
                        yield item
                return
            except ProviderError as exc:
                delay = None if started else retry_delay(policy or self.retry, attempt, exc, self._rng)
                if delay is None:
                    raise
            time.sleep(delay)

    async def _aretried(self, wire: AsyncWire) -> AsyncGenerator[str | Reply, None]:
        """``_retried`` for asyncio (same decisions, awaited)."""
        attempt = 0
        while True:
            attempt += 1
            started = False
            try:
                async with self._slots(), aclosing(wire()) as items:
                    async for item in items:
                        started = started or isinstance(item, str)
                        yield item
                return
            except ProviderError as exc:
                delay = None if started else retry_delay(self.retry, attempt, exc, self._rng)
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    def _attempts(self, wire: Wire, request: ChatRequest, model: str) -> Iterator[str | Completion]:
        """Yield ``wire()``'s text deltas (retried by ``_retried``), then the priced Completion of
        its final Reply."""
        refuse_unsupported(request, provider=self.name, model=model, accepts=self.accepts, parts=self.parts)
        start, reply = time.perf_counter(), None
        with closing(self._retried(wire)) as items:  # an abandoned stream frees its slot now
            for item in items:
                if isinstance(item, Reply):
                    reply = item
                else:
                    yield item
        yield self._price(request, model, _final(reply, self.name, model), time.perf_counter() - start)

    async def _aattempts(self, wire: AsyncWire, request: ChatRequest, model: str) -> AsyncIterator[str | Completion]:
        """``_attempts`` for asyncio."""
        refuse_unsupported(request, provider=self.name, model=model, accepts=self.accepts, parts=self.parts)
        start, reply = time.perf_counter(), None
        async with aclosing(self._aretried(wire)) as items:
            async for item in items:
                if isinstance(item, Reply):
                    reply = item
                else:
                    yield item
        yield self._price(request, model, _final(reply, self.name, model), time.perf_counter() - start)

    def _sent(self, request: ChatRequest, model: str) -> Generator[str | Reply, None, None]:
        yield self._send(request, model)

    async def _asent(self, request: ChatRequest, model: str) -> AsyncGenerator[str | Reply, None]:
        yield await self._asend(request, model)

    def complete(self, request: ChatRequest, model: str) -> Completion:
        *_, completion = self._attempts(lambda: self._sent(request, model), request, model)
        return completion  # type: ignore[return-value]

    async def acomplete(self, request: ChatRequest, model: str) -> Completion:
        async for item in self._aattempts(lambda: self._asent(request, model), request, model):
            completion = item
        return completion  # type: ignore[return-value]

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        self.close()


class SDKProvider(BaseProvider):
    """A provider over an official SDK: its sync and async clients are built on first use (never
    at import) and closed together. Its wire streams (text deltas, then the final Reply) are
    retried by the same loop as plain requests."""

    _client: Any = None
    _aclient: Any = None

    def _sdk_client(self, asynchronous: bool) -> Any:
        raise NotImplementedError

    def _wire_stream(self, request: ChatRequest, model: str) -> Generator[str | Reply, None, None]:
        raise NotImplementedError

    def _awire_stream(self, request: ChatRequest, model: str) -> AsyncGenerator[str | Reply, None]:
        raise NotImplementedError

    def _err(self, exc: Exception, model: str) -> ProviderError:
        """The ponder error for whatever the SDK or transport raised (ours pass through)."""
        if isinstance(exc, ProviderError):
            return exc
        return translate_sdk_error(exc, provider=self.name, model=model)

    def stream(self, request: ChatRequest, model: str) -> Iterator[str | Completion]:
        return self._attempts(lambda: self._wire_stream(request, model), request, model)

    def astream(self, request: ChatRequest, model: str) -> AsyncIterator[str | Completion]:
        return self._aattempts(lambda: self._awire_stream(request, model), request, model)

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
