"""Live strategies: load a saved strategy file, or answer with one model."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from ._exceptions import ConfigError
from ._types import Answer, Attempt, ChatRequest


class SingleModel:
    """The trivial strategy: always the same model."""

    kind = "single"

    def __init__(self, model: str) -> None:
        self.model = model
        self.name = model
        self.models = [model]

    def _answer(self, completion: Any) -> Answer:
        attempt = Attempt(model=self.model, response=completion.text, accepted=True,
                          cost_usd=completion.cost_usd, latency_s=completion.latency_s,
                          cached=completion.cached)
        return Answer(completion=completion, trace=(attempt,), cost_usd=completion.cost_usd,
                      strategy=self.name)

    def run(self, request: ChatRequest, client: Any) -> Answer:
        return self._answer(client.complete(request, model=self.model))

    async def arun(self, request: ChatRequest, client: Any) -> Answer:
        return self._answer(await client.acomplete(request, model=self.model))


_KIND_MODULES = {"cascade": "ponder.cascade", "router": "ponder.routers",
                 "route-cascade": "ponder.routers", "fallback": "ponder.server._fallback"}


def load_strategy(path: str | Path) -> Any:
    """Load a strategy file (JSON with ``"format": "ponder-strategy"``) as a live strategy."""
    path = Path(path)
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError("strategy file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"not a valid JSON strategy file: {exc}", file=str(path)) from None
    if not isinstance(data, dict) or data.get("format") != "ponder-strategy":
        raise ConfigError("not a ponder strategy file (missing \"format\": \"ponder-strategy\")",
                          file=str(path))
    kind = str(data.get("kind", ""))
    module = next((m for k, m in _KIND_MODULES.items() if kind == k or kind.startswith(k + "-")
                   or kind.startswith(k + ":")), None)
    if kind == "single":
        return SingleModel(str(data["model"]))
    if module is None:
        raise ConfigError(f"unknown strategy kind {kind!r}", file=str(path), key="kind")
    return importlib.import_module(module).load_strategy_file(path, data)
