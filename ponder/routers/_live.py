"""Routers answering real requests: strategy files of kind ``router`` and ``route-cascade``.

A strategy file is JSON::

    {"format": "ponder-strategy", "version": 1, "kind": "router", "name": "router-utility",
     "router": "router",                      # the saved router dir, relative to this file
     "knob": 0.0,                             # optional; default: the router's (calibrated) knob
     "candidates": ["m1", "m2"],              # optional subset of the router's models
     "model_map": {"gpt-4-1106-preview": "openai:gpt-4-1106-preview"}}

``route-cascade`` adds ``"cascade": "cascade.json"``: the router picks the rung where that
cascade starts (see :class:`RouteThenCascade`).

Model names in outcome tables are bare; ``model_map`` maps them to live ``provider:model`` specs.
Without an entry, a name containing ':' is used as is and a bare name ``m`` becomes ``replay:m``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError, UnknownModel
from .._types import Answer, Attempt, ChatRequest, Completion
from ..strategies import (
    STRATEGY_FORMAT,
    LiveStrategy,
    StreamEvent,
    answered,
    live_spec,
    read_strategy_json,
    resolve_reference,
    stream_model,
)
from ._base import BaseRouter, RouteDecision
from ._io import load_router

STRATEGY_VERSION = 1


class LiveRouter:
    """One routing decision (pure, shared by ``run`` and ``arun``), then one call."""

    kind = "router"

    def __init__(self, router: BaseRouter, *, name: str | None = None, knob: float | None = None,
                 candidates: list[str] | None = None,
                 model_map: dict[str, str] | None = None) -> None:
        router.check_known(model_map or {}, "strategy model_map")
        router._model_indices(candidates)  # unknown candidates → UnknownModel now, not per request
        self.router = router
        self.name = name or f"router-{router.kind}"
        self.knob = knob
        self.candidates = candidates
        self.model_map = dict(model_map or {})
        self.models = [live_spec(m, self.model_map) for m in (candidates or router.models_)]

    def decide(self, request: ChatRequest) -> tuple[RouteDecision, str]:
        d = self.router.route(request.query, knob=self.knob, models=self.candidates)
        return d, live_spec(d.model, self.model_map)

    def _answer(self, d: RouteDecision, spec: str, completion: Completion) -> Answer:
        attempt = Attempt(model=spec, response=completion.text, score=d.quality.get(d.model),
                          accepted=True, cost_usd=completion.cost_usd,
                          latency_s=completion.latency_s, cached=completion.cached)
        return Answer(completion=completion, trace=(attempt,), cost_usd=completion.cost_usd,
                      strategy=self.name,
                      extra={"router": self.router.kind, "chosen": d.model, "knob": d.knob,
                             "predicted_quality": d.quality, "predicted_cost": d.cost})

    def run(self, request: ChatRequest, client: Any) -> Answer:
        d, spec = self.decide(request)
        return self._answer(d, spec, client.complete(request, model=spec))

    async def arun(self, request: ChatRequest, client: Any) -> Answer:
        d, spec = self.decide(request)
        return self._answer(d, spec, await client.acomplete(request, model=spec))

    async def astream(self, request: ChatRequest, client: Any) -> AsyncIterator[StreamEvent]:
        """Decide, then stream the chosen model live (the choice needs no answer)."""
        d, spec = self.decide(request)
        async for event in stream_model(client, request, spec, partial(self._answer, d, spec)):
            yield event


class RouteThenCascade:
    """The router picks the rung at which the cascade starts; the cascade runs from there.

    Rungs below the chosen one are skipped (neither called nor paid for); the starting rung is
    scored with no earlier answer in view. The router must know every rung's model (the outcome
    table's bare names, ``Rung.model``).
    """

    kind = "route-cascade"

    def __init__(self, router: BaseRouter, cascade: Any, *, name: str | None = None,
                 knob: float | None = None) -> None:
        self.router = router
        self.cascade = cascade
        self.name = name or f"route-cascade-{router.kind}"
        self.knob = knob
        self.rungs = [r.model for r in cascade.rungs]
        router.check_known(self.rungs, "cascade rungs")
        self.models = list(cascade.models)

    def start_rung(self, request: ChatRequest) -> tuple[int, RouteDecision]:
        d = self.router.route(request.query, knob=self.knob, models=self.rungs)
        return self.rungs.index(d.model), d

    def _from(self, start: int) -> Any:
        if start == 0:
            return self.cascade
        return type(self.cascade)(self.cascade.rungs[start:], budget_usd=self.cascade.budget_usd,
                                  name=self.name)

    def _tag(self, ans: Answer, start: int, d: RouteDecision) -> Answer:
        return ans.model_copy(update={"strategy": self.name, "extra": {
            **ans.extra, "start_rung": start, "start_model": d.model,
            "predicted_quality": d.quality}})

    def run(self, request: ChatRequest, client: Any) -> Answer:
        start, d = self.start_rung(request)
        return self._tag(self._from(start).run(request, client), start, d)

    async def arun(self, request: ChatRequest, client: Any) -> Answer:
        start, d = self.start_rung(request)
        return self._tag(await self._from(start).arun(request, client), start, d)

    async def astream(self, request: ChatRequest, client: Any) -> AsyncIterator[StreamEvent]:
        """The accepted answer, streamed once the cascade has decided."""
        for event in answered(await self.arun(request, client)):
            yield event


def load_strategy_file(path: str | Path, data: dict[str, Any], *,
                       allow_outside: bool = False) -> LiveRouter | RouteThenCascade:
    """Build a live router strategy from a parsed strategy file (called by ponder.load_strategy).

    The router folder and cascade file it names must lie in its own folder unless
    ``allow_outside`` (see :func:`ponder.strategies.resolve_reference`).
    """
    path = Path(path)
    version = data.get("version", 1)
    if version != STRATEGY_VERSION:
        raise ConfigError(f"strategy file version {version!r} not supported (reads "
                          f"{STRATEGY_VERSION})", file=str(path), key="version")
    kind = str(data.get("kind", ""))
    model_map = data.get("model_map") or {}
    if not isinstance(model_map, dict) or not all(isinstance(v, str) for v in model_map.values()):
        raise ConfigError("model_map must map model names to 'provider:model' strings",
                          file=str(path), key="model_map")
    knob = data.get("knob")
    if knob is not None and not isinstance(knob, int | float):
        raise ConfigError(f"knob must be a number, got {knob!r}", file=str(path), key="knob")
    router = load_router(resolve_reference(path, data.get("router"), key="router",
                                           allow_outside=allow_outside))
    name = data.get("name")
    try:
        if kind == "route-cascade":
            from .. import cascade as cascade_mod

            cpath = resolve_reference(path, data.get("cascade"), key="cascade",
                                      allow_outside=allow_outside)
            casc = cascade_mod.load_strategy_file(cpath, read_strategy_json(cpath),
                                                  allow_outside=allow_outside)
            return RouteThenCascade(router, casc, name=name, knob=knob)
        if kind == "router" or kind.startswith(("router-", "router:")):
            cands = data.get("candidates")
            return LiveRouter(router, name=name, knob=knob, candidates=cands, model_map=model_map)
    except UnknownModel as exc:
        raise UnknownModel(f"{path}: {exc}") from None
    raise ConfigError(f"unknown router strategy kind {kind!r}", file=str(path), key="kind")


def write_strategy_file(path: str | Path, router_dir: str | Path, *, kind: str = "router",
                        name: str | None = None, knob: float | None = None,
                        model_map: dict[str, str] | None = None,
                        extra: dict[str, Any] | None = None) -> Path:
    """Write a strategy JSON pointing at ``router_dir`` (stored relative to the JSON's folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rd, here = Path(router_dir).resolve(), path.parent.resolve()
    doc: dict[str, Any] = {"format": STRATEGY_FORMAT, "version": STRATEGY_VERSION, "kind": kind,
                           "name": name or kind,
                           "router": str(rd.relative_to(here) if rd.is_relative_to(here) else rd)}
    if knob is not None:
        doc["knob"] = float(knob)
    if model_map:
        doc["model_map"] = dict(model_map)
    doc.update(extra or {})
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


if TYPE_CHECKING:  # mypy checks that every built-in strategy implements the live protocol
    from ..cascade import Cascade
    from ..strategies import FallbackChain, SingleModel

    def _builtins(single: SingleModel, chain: FallbackChain, cascade: Cascade, router: LiveRouter,
                  route_cascade: RouteThenCascade) -> list[LiveStrategy]:
        return [single, chain, cascade, router, route_cascade]
