"""The Provider protocol, and the retries (here, not in the SDKs: one backoff honouring ``Retry-After``;
a stream only until its first text), concurrency limit and pricing every real provider shares."""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextlib import aclosing, closing
from dataclasses import dataclass
from functools import partial
from itertools import count
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
    """Seconds before retry ``attempt`` (1-based), or None; a longer ``Retry-After`` wins."""
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


class WholeTextStream:
    """Streaming for providers that answer in one piece: the whole text, then the Completion."""

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

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        self.close()


def once(fn: Callable[..., T], *args: Any) -> Generator[T, None, None]:
    yield fn(*args)


async def _aonce(fn: Callable[..., Awaitable[T]], *args: Any) -> AsyncGenerator[T, None]:
    yield await fn(*args)


class BaseProvider(WholeTextStream):
    """Retries, a per-provider concurrency limit and pricing around ``_send``/``_asend``."""

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

    def _send(self, request: ChatRequest, model: str) -> Reply:
        raise NotImplementedError

    async def _asend(self, request: ChatRequest, model: str) -> Reply:
        raise NotImplementedError

    def _err(self, exc: Exception, model: str) -> Exception:
        """The error to raise (or retry) for what a wire call raised."""
        return exc

    @property
    def endpoint(self) -> str:
        """Where answers come from (part of the cache key; never a credential)."""
        return ""

    def _price(self, request: ChatRequest, model: str, reply: Reply, latency: float,
               batch: bool = False) -> Completion:
        # the prompt text is only needed to estimate missing usage
        prompt = "\n".join(m.text for m in request.messages) if reply.usage is None else ""
        return price_completion(
            self.prices, provider=self.name, model=model, usage=reply.usage, prompt_text=prompt,
            text=reply.text, latency_s=latency, finish_reason=reply.finish_reason, batch=batch,
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

    def _delay(self, exc: Exception, model: str, started: bool, attempt: int,
               policy: RetryPolicy | None = None) -> float:
        """Seconds before the next attempt; raises the translated error when there is none."""
        err = self._err(exc, model)
        delay = None if started else retry_delay(policy or self.retry, attempt, err, self._rng)
        if delay is None:
            raise err from None
        return delay

    def _retried(self, wire: Callable[[], Generator[T, None, None]], model: str,
                 policy: RetryPolicy | None = None) -> Generator[T, None, None]:
        """Yield ``wire()``'s items, run again after a retryable error until its first text."""
        for attempt in count(1):
            started = False
            try:
                with self._sync_slots, closing(wire()) as items:
                    for item in items:
                        started = started or isinstance(item, str)
                        yield item
                return
            except Exception as exc:  # noqa: BLE001 - translated at the boundary
                delay = self._delay(exc, model, started, attempt, policy)
            time.sleep(delay)

    def _attempts(self, wire: Callable[[], Generator[str | Reply, None, None]], request: ChatRequest,
                  model: str) -> Iterator[str | Completion]:
        """One attempt ``wire()``'s text deltas (retried), then the priced Completion of its final Reply."""
        refuse_unsupported(request, provider=self.name, model=model, accepts=self.accepts, parts=self.parts)
        start, reply = time.perf_counter(), None
        with closing(self._retried(wire, model)) as items:  # an abandoned stream frees its slot now
            for item in items:
                if isinstance(item, Reply):
                    reply = item
                else:
                    yield item
        yield self._price(request, model, _final(reply, self.name, model), time.perf_counter() - start)

    async def _aattempts(self, wire: Callable[[], AsyncGenerator[str | Reply, None]], request: ChatRequest,
                         model: str) -> AsyncIterator[str | Completion]:
        """``_attempts`` and its ``_retried`` for asyncio (same decisions, awaited)."""
        refuse_unsupported(request, provider=self.name, model=model, accepts=self.accepts, parts=self.parts)
        start, reply = time.perf_counter(), None
        for attempt in count(1):
            started = False
            try:
                async with self._slots(), aclosing(wire()) as items:
                    async for item in items:
                        if isinstance(item, Reply):
                            reply = item
                        else:
                            started = True
                            yield item
                break
            except Exception as exc:  # noqa: BLE001 - translated at the boundary
                delay = self._delay(exc, model, started, attempt)
            await asyncio.sleep(delay)
        yield self._price(request, model, _final(reply, self.name, model), time.perf_counter() - start)

    def complete(self, request: ChatRequest, model: str) -> Completion:
        *_, completion = self._attempts(partial(once, self._send, request, model), request, model)
        return completion  # type: ignore[return-value]

    async def acomplete(self, request: ChatRequest, model: str) -> Completion:
        wire = partial(_aonce, self._asend, request, model)
        async for item in self._aattempts(wire, request, model):
            completion = item
        return completion  # type: ignore[return-value]


def _final(reply: Reply | None, provider: str, model: str) -> Reply:
    if reply is None:
        raise BadResponse("the answer ended without a final reply", provider=provider, model=model)
    return reply


NO_KEY = "not-needed"  # what the SDKs get when no key may go to an endpoint (they require a string)


class SDKProvider(BaseProvider):
    """Over an official SDK client ``sdk`` and its ``Async`` twin, built on first use (never at import)."""

    sdk = ""
    env = ""
    official_urls: tuple[str, ...] = ()
    _client: Any = None
    _aclient: Any = None

    def __init__(
        self, *, api_key: str | None = None, base_url: str | None = None, timeout_s: float = 60.0,
        retry: RetryPolicy | None = None, max_concurrency: int = 16, prices: PriceTable | None = None,
        name: str | None = None, api_key_env: str | None = None,
    ) -> None:
        super().__init__(prices=prices, retry=retry, max_concurrency=max_concurrency)
        self.name = name or self.name
        self.base_url = base_url or os.environ.get(f"{self.env}_BASE_URL") or None
        self.timeout_s = timeout_s
        if api_key_env and not api_key:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise AuthError(f"providers.{self.name}.api_key_env names {api_key_env}, which is "
                                "empty or not set", provider=self.name)
        elif not api_key:
            # a configured key goes anywhere; ``<env>_API_KEY`` only to the vendor or ``<env>_BASE_URL``
            official = {u.rstrip("/") for u in self.official_urls}
            paired = (os.environ.get(f"{self.env}_BASE_URL") or "").rstrip("/")
            target = self.base_url.rstrip("/") if self.base_url else None
            if target is None or target in official or target == paired:
                api_key = os.environ.get(f"{self.env}_API_KEY")
                if not api_key and (target is None or target in official):
                    raise AuthError(f"no API key: set {self.env}_API_KEY or providers.{self.name}.api_key",
                                    provider=self.name)
        if api_key:
            register_secret(api_key)
        # no key: a keyless self-hosted server (they usually ignore it), or one the vendor's key is not for
        self._key = api_key or NO_KEY

    @property
    def endpoint(self) -> str:
        return self.base_url or self.official_urls[0]

    def _wire_stream(self, request: ChatRequest, model: str) -> Generator[str | Reply, None, None]:
        raise NotImplementedError

    def _awire_stream(self, request: ChatRequest, model: str) -> AsyncGenerator[str | Reply, None]:
        raise NotImplementedError

    def _err(self, exc: Exception, model: str) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        return translate_sdk_error(exc, provider=self.name, model=model)

    def stream(self, request: ChatRequest, model: str) -> Iterator[str | Completion]:
        return self._attempts(lambda: self._wire_stream(request, model), request, model)

    def astream(self, request: ChatRequest, model: str) -> AsyncIterator[str | Completion]:
        return self._aattempts(lambda: self._awire_stream(request, model), request, model)

    def _sdk_client(self, prefix: str) -> Any:
        attr = "_aclient" if prefix else "_client"
        if getattr(self, attr) is None:
            module, _, name = self.sdk.rpartition(".")
            cls = getattr(importlib.import_module(module), prefix + name)
            # an explicit api_key also stops an SDK reading other credentials (a token, a profile)
            setattr(self, attr, cls(api_key=self._key, base_url=self.base_url, timeout=self.timeout_s,
                                    max_retries=0))
        return getattr(self, attr)

    @property
    def client(self) -> Any:
        return self._sdk_client("")

    @property
    def aclient(self) -> Any:
        return self._sdk_client("Async")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        self.close()
        if self._aclient is not None:
            await self._aclient.close()
            self._aclient = None
