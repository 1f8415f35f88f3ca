"""The routing table: a request's ``model`` → a :class:`Route` → a live strategy; and the request
as ponder's :class:`~ponder.ChatRequest`, exactly as the client sent it."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, create_model

from .._client import Client
from .._config import Config
from .._exceptions import UnknownModel
from .._types import ChatRequest
from ..strategies import LiveStrategy, SingleModel, as_live
from ._errors import _one_line
from ._schemas import ChatCompletionRequest, ChatMessageIn

log = logging.getLogger("ponder.server")

STRATEGY_PREFIX = "ponder/"


@dataclass(frozen=True)
class Route:
    """A served model id and the live strategy that answers it."""

    id: str
    strategy: LiveStrategy
    owned_by: str


def build_routes(config: Config, strategies: Mapping[str, Any], models: Sequence[str]) -> dict[str, Route]:
    """``ponder/<name>`` for each strategy; every model a strategy may call, each config alias
    and each of ``models`` as a single-model route of its own."""
    routes: dict[str, Route] = {}
    for name, strategy in strategies.items():
        rid = name if name.startswith(STRATEGY_PREFIX) else STRATEGY_PREFIX + name
        routes[rid] = Route(rid, as_live(strategy), "ponder")
    plain = [*models, *(str(m) for route in routes.values() for m in route.strategy.models)]
    for name, spec in [*config.models.items(), *((spec, spec) for spec in plain)]:
        routes.setdefault(name, Route(name, SingleModel(spec), spec.partition(":")[0]))
    return routes


def resolve_route(routes: Mapping[str, Route], model: str) -> Route:
    route = routes.get(model) or routes.get(STRATEGY_PREFIX + model)
    if route is None:  # a bare model name that matches exactly one served provider:model
        matches = [r for r in routes.values() if ":" in r.id and r.id.partition(":")[2] == model]
        if len(matches) == 1:
            route = matches[0]
    if route is None:
        shown = ", ".join(sorted(routes)[:20])
        raise UnknownModel(f"model {model[:100]!r} is not served here; available: {shown}")
    return route


def accepted_names(routes: Mapping[str, Route]) -> list[str]:
    """Every ``model`` value the server resolves (ids, strategy names, unique bare model names)."""
    names = set(routes)
    names |= {r[len(STRATEGY_PREFIX):] for r in routes if r.startswith(STRATEGY_PREFIX)}
    bare = [r.partition(":")[2] for r in routes if ":" in r]
    names |= {b for b in bare if bare.count(b) == 1}
    return sorted(n for n in names if _resolves(routes, n))


def _resolves(routes: Mapping[str, Route], name: str) -> bool:
    try:
        resolve_route(routes, name)
    except UnknownModel:
        return False
    return True


def request_model(max_messages: int) -> type[ChatCompletionRequest]:
    """The request schema with this server's message limit (so /openapi.json states it too)."""
    model: type[ChatCompletionRequest] = create_model(
        "ChatCompletionRequest", __base__=ChatCompletionRequest, __module__=__name__,
        messages=(list[ChatMessageIn], Field(min_length=1, max_length=max_messages)))
    return model


def warm_providers(client: Client, routes: Mapping[str, Route]) -> None:
    """Build every served provider and its SDK client now (in a worker thread, at startup).

    Otherwise the first request to each provider imports its SDK (a second or more for
    ``openai``) on the event loop, and every request in flight waits. Building a provider also
    registers its key for scrubbing. A provider that cannot be built is left for the first
    request to report. A provider with ``preload`` (``local:``) loads each served model now, so
    no request waits for (or times out on) a load.
    """
    specs: set[tuple[str, str]] = set()
    for route in routes.values():
        for spec in route.strategy.models:
            try:
                resolved = client.resolve(spec)
            except Exception:  # noqa: BLE001 - reported by the request that uses it
                continue
            specs.add((resolved.provider, resolved.model))
    for name in sorted({p for p, _ in specs}):
        try:
            built = client.provider(name)
            provider = getattr(built, "provider", built)  # under a CachedProvider
            getattr(provider, "aclient", None)  # the SDK import
            for model in sorted(m for p, m in specs if p == name and hasattr(provider, "preload")):
                provider.preload(model)
        except Exception as exc:  # noqa: BLE001
            log.debug("provider %s not built at startup: %s", name, _one_line(exc))


_NOT_FORWARDED = {"model", "stream", "stream_options"}  # the route, and how ponder answers


def to_chat_request(body: ChatCompletionRequest) -> ChatRequest:
    """The request exactly as the client sent it: every field it set, none it did not."""
    return ChatRequest.model_validate(body.model_dump(exclude_unset=True, by_alias=True,
                                                      exclude=_NOT_FORWARDED))
