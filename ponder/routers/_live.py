"""Routers answering real requests (strategy files of kind ``router``, ``route-cascade``) and
``ponder train router``. A strategy file is JSON: ``{"format": "ponder-strategy", "version": 1, "kind": "router", "name":
..., "router": "router"`` (the saved router dir, relative to the file), optional ``"knob"``
(default: the router's calibrated one), ``"candidates"`` (a subset of its models) and
``"model_map"`` (bare outcome-table names → live ``provider:model`` specs; unmapped, a name with
':' is used as is and ``m`` becomes ``replay:m``)``}``. ``route-cascade`` adds ``"cascade"``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
from ._io import ROUTER_KINDS, load_router, save_router

STRATEGY_VERSION = 1
log = logging.getLogger("ponder.routers")


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
    """The router picks the rung where the cascade starts; lower rungs are neither called nor paid."""

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
    """The live strategy of a parsed strategy file; what it names must lie in its folder unless
    ``allow_outside``."""
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
    ref = partial(resolve_reference, path, allow_outside=allow_outside)
    router = load_router(ref(data.get("router"), key="router"))
    name = data.get("name")
    try:
        if kind == "route-cascade":
            from .. import cascade as cascade_mod

            cpath = ref(data.get("cascade"), key="cascade")
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


@dataclass(frozen=True)
class TrainedRouter:
    router: BaseRouter
    router_dir: Path
    strategy_file: Path
    n_train: int
    n_calibration: int
    route_cascade_file: Path | None = None


def train_router(
    table: Any,
    kind: str,
    output: str | Path,
    *,
    model_map: dict[str, str] | None = None,
    strong_share: float | None = None,
    budget: float | None = None,
    quality_floor: float | None = None,
    delta: float = 0.1,
    calibration_fraction: float = 0.25,
    seed: int = 0,
    cascade: str | Path | None = None,
    knob: float | None = None,
    **params: Any,
) -> TrainedRouter:
    """Fit a ``kind`` router on ``table``'s train rows, optionally calibrate, save to ``output``."""
    from ..evaluation._table import OutcomeTable

    if kind not in ROUTER_KINDS:
        raise ConfigError(f"unknown router kind {kind!r}; use one of {', '.join(ROUTER_KINDS)}")
    cls = ROUTER_KINDS[kind]
    valid = cls._get_param_names()
    router = cls(**{k: v for k, v in params.items() if k in valid and v is not None})
    train = table
    if "split" in table.df.columns:
        per_q = table.df.drop_duplicates("query_id").set_index("query_id")["split"]
        train_ids = [q for q in table.query_ids if str(per_q[q]).lower() == "train"]
        if train_ids:
            train = table.subset(train_ids)
    calib: OutcomeTable | None = None
    targets = [t for t in (strong_share, budget, quality_floor) if t is not None]
    if len(targets) > 1:
        raise ConfigError("give at most one calibration target (strong share, budget, quality floor)")
    if knob is not None and targets:
        raise ConfigError("give a knob or a calibration target, not both")
    if targets:
        train, calib = train.split(test_fraction=calibration_fraction, seed=seed, split_column=None)
    router.fit(train)
    if model_map:
        router.check_known(model_map, "model map")
    if calib is not None:
        router.calibrate(calib, strong_share=strong_share, budget=budget,
                         quality_floor=quality_floor, delta=delta)
    out = Path(output)
    router_dir = save_router(router, out / "router")
    strategy = write_strategy_file(out / "router.json", router_dir, kind="router",
                                   name=f"router-{router.kind}", knob=knob, model_map=model_map)
    route_cascade = None if cascade is None else write_route_cascade(
        out / "route-cascade.json", router_dir, cascade, knob=knob)
    return TrainedRouter(router, router_dir, strategy, len(train.query_ids),
                         0 if calib is None else len(calib.query_ids), route_cascade)


def write_route_cascade(path: str | Path, router_dir: str | Path, cascade: str | Path, *,
                        knob: float | None = None) -> Path:
    """A ``route-cascade`` strategy file, loaded once so that a rung the router never saw fails here."""
    from ..strategies import load_strategy

    path, cascade = Path(path), Path(cascade)
    rel = os.path.relpath(cascade.resolve(), path.parent.resolve())
    out = write_strategy_file(path, router_dir, kind="route-cascade", name="route-cascade",
                              knob=knob, extra={"cascade": rel})
    if rel.startswith("..") or Path(rel).is_absolute():
        log.warning("%s names %s, outside its folder: loading it will need --allow-outside "
                    "(allow_outside=True); keep the cascade beside it to avoid that", out, rel)
    try:
        load_strategy(out, allow_outside=True)
    except Exception:
        out.unlink()
        raise
    return out


if TYPE_CHECKING:  # mypy checks that every built-in strategy implements the live protocol
    from ..cascade import Cascade
    from ..strategies import FallbackChain, SingleModel

    def _builtins(single: SingleModel, chain: FallbackChain, cascade: Cascade, router: LiveRouter,
                  route_cascade: RouteThenCascade) -> list[LiveStrategy]:
        return [single, chain, cascade, router, route_cascade]
