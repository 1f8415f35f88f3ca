"""``Client``: resolves ``provider:model`` specs to providers (cached), and answers requests."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from ._cache import (
    CacheBackend,
    CachedProvider,
    CacheGuard,
    CacheStats,
    cache_stats,
    open_backend,
)
from ._catalog import Catalog
from ._config import Config, load_config
from ._exceptions import CacheDisabled
from ._pricing import PriceTable
from ._types import ChatRequest, Completion, Message, ModelSpec
from .providers._registry import build_provider

Prompt = str | ChatRequest | list[Message] | list[dict[str, str]]


class Client:
    """The entry point for live calls. ``cache``: True/None for the config's, False for none, or a
    backend; ``base_urls`` overrides named providers' base URLs (``{"openai": url}``)."""

    def __init__(
        self,
        config: Config | str | Path | None = None,
        *,
        cache: bool | CacheBackend | None = None,
        base_urls: dict[str, str] | None = None,
    ) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self.prices = PriceTable.default().with_overrides(self.config.prices)
        self.catalog = Catalog.default().with_overrides(self.config.capabilities)
        self.base_urls = dict(base_urls or {})
        if isinstance(cache, bool) or cache is None:
            enabled = self.config.cache.enabled if cache is None else cache
            self.cache: CacheBackend | None = open_backend(self.config.cache) if enabled else None
        else:
            self.cache = cache
        # one guard per backend: one warning per outage, not one per provider
        self._guard = CacheGuard(self.cache) if self.cache is not None else None
        self._providers: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- resolution ---------------------------------------------------------------------
    def resolve(self, model: str | ModelSpec) -> ModelSpec:
        if isinstance(model, str) and model in self.config.models:
            model = self.config.models[model]
        return ModelSpec.parse(model)

    def provider(self, name: str) -> Any:
        with self._lock:
            p = self._providers.get(name)
            if p is None:
                settings = self.config.provider_settings(name)
                if name in self.base_urls:
                    settings = settings.model_copy(update={"base_url": self.base_urls[name]})
                p = build_provider(name, settings, self.prices)
                if self.cache is not None:
                    p = CachedProvider(p, self.cache, ttl_s=self.config.cache.ttl_s,
                                       cache_sampled=self.config.cache.cache_sampled, guard=self._guard)
                self._providers[name] = p
            return p

    @staticmethod
    def request(prompt: Prompt, **params: Any) -> ChatRequest:
        if isinstance(prompt, ChatRequest):
            return prompt.model_copy(update=params) if params else prompt
        return ChatRequest.of(prompt, **params)

    # --- calls --------------------------------------------------------------------------
    def _admit(self, prompt: Prompt, model: str | ModelSpec, params: dict[str, Any]) -> tuple[ModelSpec, ChatRequest]:
        """The model and the request, once the catalogue says the model can serve it."""
        spec, request = self.resolve(model), self.request(prompt, **params)
        self.catalog.refuse(spec.provider, spec.model, request)
        return spec, request

    def complete(self, prompt: Prompt, *, model: str | ModelSpec, **params: Any) -> Completion:
        spec, request = self._admit(prompt, model, params)
        return self.provider(spec.provider).complete(request, spec.model)  # type: ignore[no-any-return]

    async def acomplete(self, prompt: Prompt, *, model: str | ModelSpec, **params: Any) -> Completion:
        spec, request = self._admit(prompt, model, params)
        completion: Completion = await self.provider(spec.provider).acomplete(request, spec.model)
        return completion

    def stream(self, prompt: Prompt, *, model: str | ModelSpec, **params: Any) -> Iterator[str | Completion]:
        """Text deltas, then the priced Completion as the last item."""
        spec, request = self._admit(prompt, model, params)
        return self.provider(spec.provider).stream(request, spec.model)  # type: ignore[no-any-return]

    def astream(self, prompt: Prompt, *, model: str | ModelSpec, **params: Any) -> AsyncIterator[str | Completion]:
        spec, request = self._admit(prompt, model, params)
        return self.provider(spec.provider).astream(request, spec.model)  # type: ignore[no-any-return]

    # --- cache --------------------------------------------------------------------------
    def cache_stats(self) -> CacheStats:
        """Hits, misses, savings and size (``CacheDisabled`` without a cache)."""
        if self.cache is None:
            raise CacheDisabled("the cache is disabled (Client(cache=False) or [cache] enabled = false)")
        return cache_stats(self.cache)

    # --- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        for p in self._providers.values():
            p.close()
        self._providers.clear()
        if self.cache is not None:
            self.cache.close()

    async def aclose(self) -> None:
        for p in self._providers.values():
            closer = getattr(p, "aclose", None)
            if closer is not None:
                await closer()
            else:
                p.close()
        self._providers.clear()
        if self.cache is not None:  # release the cache's connections bound to this event loop
            closer = getattr(self.cache, "aclose", None)
            if closer is not None:
                await closer()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
        if self.cache is not None:
            self.cache.close()
