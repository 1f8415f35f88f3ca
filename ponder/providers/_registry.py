"""Resolve a provider name (from ``provider:model``) to a built provider, using the config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._config import PROVIDER_TYPES, Builder, ProviderSettings
from .._exceptions import ConfigError, PonderError, UnknownProvider
from .._pricing import PriceTable
from ._anthropic import AnthropicProvider
from ._base import RetryPolicy
from ._openai import OpenAIProvider


def register(kind: str) -> Callable[[Builder], Builder]:
    """Register ``builder(name, settings, prices, common)`` (``common``: every remote one's arguments)."""

    def add(builder: Builder) -> Builder:
        PROVIDER_TYPES[kind] = builder
        return builder

    return add


@register("anthropic")
@register("openai")  # applied first: the list of types starts with it
def _sdk(name: str, settings: ProviderSettings, prices: PriceTable, common: dict[str, Any]) -> Any:
    cls = OpenAIProvider if (settings.type or name) == "openai" else AnthropicProvider
    return cls(**common, api_key_env=settings.api_key_env)


@register("replay")
def _replay(name: str, settings: ProviderSettings, prices: PriceTable, common: dict[str, Any]) -> Any:
    from ._replay import ReplayProvider

    if not settings.path:
        raise ConfigError("a replay provider needs path = <outcome table>", key=f"providers.{name}.path")
    return ReplayProvider(settings.path, name=name)


@register("local")
def _local(name: str, settings: ProviderSettings, prices: PriceTable, common: dict[str, Any]) -> Any:
    from ..local import require_extra

    try:
        require_extra()
    except PonderError as exc:
        raise UnknownProvider(f"the local provider: {exc}") from None
    from ..local._provider import LocalProvider

    # timeout_s and max_concurrency when set: unset, local generation has no time limit and
    # decodes 4 requests in turn (the remote APIs' defaults do not fit a local model).
    limits = {k: getattr(settings, k) for k in ("timeout_s", "max_concurrency") if k in settings.model_fields_set}
    return LocalProvider(settings.path, draft=settings.draft, name=name, prices=prices,
                         **limits, **settings.options)


def provider_kinds() -> tuple[str, ...]:
    return tuple(PROVIDER_TYPES)


def build_provider(name: str, settings: ProviderSettings, prices: PriceTable) -> Any:
    """Build one provider; keys are read here (config or environment), never at import."""
    kind = settings.type or name
    builder = PROVIDER_TYPES.get(kind)
    if builder is None:
        raise UnknownProvider(
            f"unknown provider {name!r}; use one of {', '.join(PROVIDER_TYPES)} or define [providers.{name}] "
            "with a type in the config")
    retry = RetryPolicy(max_retries=settings.max_retries, initial_s=settings.backoff_initial_s,
                        max_s=settings.backoff_max_s)
    common: dict[str, Any] = dict(
        base_url=settings.base_url, timeout_s=settings.timeout_s, retry=retry,
        max_concurrency=settings.max_concurrency, prices=prices, name=name,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
    )
    return builder(name, settings, prices, common)
