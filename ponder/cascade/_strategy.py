"""The cascade as an evaluation strategy: ``ponder eval`` fits it on train and sweeps budgets on test."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator

from ..evaluation import OperatingPoint, register_strategy
from ..strategies import live_model_map
from ._fit import CascadeOptimizer
from ._optimize import ChainChoice

if TYPE_CHECKING:
    from ..evaluation import OutcomeTable
    from ._cascade import Cascade

__all__ = ["CascadeStrategy"]


@dataclass(eq=False, repr=False)
class CascadeStrategy(BaseEstimator):  # type: ignore[misc]  # scikit-learn is untyped
    """Fit scorers (cross-fitted) and the chain frontier on train (``optimizer_``); replay budgets on test."""

    kind = "cascade"
    name: str = "cascade"
    _: KW_ONLY
    n_budgets: int = 16
    max_length: int = 3
    folds: int = 3
    scorer_params: dict[str, Any] | None = None
    seed: int = 0
    set_pool: int = 0
    set_compare: str = "auto"
    set_text_method: str = "tokens"
    set_relative: bool = False
    n_pareto: int = 0  # also sweep up to this many points of the train Pareto front

    def fit(self, train: OutcomeTable) -> CascadeStrategy:
        shared = {f.name for f in fields(self)} & {f.name for f in fields(CascadeOptimizer)}
        self.optimizer_ = CascadeOptimizer(**{k: getattr(self, k) for k in shared}).fit(train)
        return self

    def budgets(self) -> np.ndarray:
        """Budgets spanning the train frontier, log-spaced from its cheapest to its dearest point."""
        lo = max(float(self.optimizer_.frontier_.cost.min()), 1e-12)
        hi = float(np.nanmax(self.optimizer_.mean_cost_))
        return np.geomspace(lo, max(hi, lo * 1.0001), self.n_budgets)

    def choices(self, *, unique: bool = False) -> list[tuple[float, ChainChoice]]:
        """The best chain for each of :meth:`budgets`, then up to ``n_pareto`` Pareto points evenly
        spaced in cost (``unique``: each chain and thresholds once)."""
        f = self.optimizer_.frontier_
        out = [(float(b), f.best_for_budget(float(b))) for b in self.budgets()]
        if self.n_pareto > 0:
            front = f.pareto()  # cheapest first
            fc = np.array([c.cost for c in front])
            grid = np.linspace(fc[0], fc[-1], self.n_pareto)
            pick = np.unique(np.minimum(np.searchsorted(fc, grid), len(front) - 1))
            out += [(front[i].cost, front[i]) for i in pick]
        seen: set[tuple[Any, Any]] = set()
        keep = []
        for b, c in out:
            if c is not None and not (unique and (c.chain, c.thresholds) in seen):
                seen.add((c.chain, c.thresholds))
                keep.append((b, c))
        return keep

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        return self._points(test, self.choices(unique=True))

    def replay(self, test: OutcomeTable, settings: list[dict[str, Any]]) -> list[OperatingPoint]:
        """Another fit's settings on ``test``: each budget's chain on *this* fit's frontier."""
        return self._points(test, [(float(s["budget_usd"]), self._chain_for(float(s["budget_usd"])))
                                   for s in settings])

    def _chain_for(self, budget: float) -> ChainChoice:
        f = self.optimizer_.frontier_
        return f.best_for_budget(budget) or f.pareto()[0]

    def live(self, setting: dict[str, Any], *, name: str | None = None,
             model_map: dict[str, str] | None = None, config: Any = None) -> Cascade:
        """The live cascade measured at ``setting`` (``config``: its ``[models]`` aliases name the
        live specs ``model_map`` leaves out)."""
        return self.optimizer_.build(self._chain_for(float(setting["budget_usd"])),
                                     name=name or self.name,
                                     model_map=live_model_map(self.optimizer_.models_, model_map,
                                                              config))

    def save(self, setting: dict[str, Any], directory: str | Path, *, name: str,
             model_map: dict[str, str] | None = None) -> Path:
        """Write the cascade measured at ``setting`` into ``directory``; returns the strategy file."""
        cascade = self.live(setting, name=name, model_map=model_map)
        return cascade.save(Path(directory) / "strategy.json", model_map=model_map)

    def _points(self, test: OutcomeTable, choices: list[tuple[float, ChainChoice]]
                ) -> list[OperatingPoint]:
        opt = self.optimizer_
        test, s1, s2 = opt.score_table(test)
        points = []
        for b, choice in choices:
            cascade = opt.build(choice, name=self.name)
            cost, qual, _ = cascade.replay(test, *opt.replay_scores(choice.chain, s1, s2))
            points.append(OperatingPoint(
                setting={"budget_usd": float(b), "chain": opt.describe(choice.chain),
                         "thresholds": [round(t, 4) for t in choice.thresholds],
                         **({"set_pool": self.set_pool} if self.set_pool else {})},
                cost=cost, quality=qual,
                extra={"train_cost": choice.cost, "train_quality": choice.quality}))
        return points


@register_strategy("cascade")
def _factory(train: OutcomeTable) -> CascadeStrategy | None:
    if len(train.models) < 2:
        return None
    return CascadeStrategy()


@register_strategy("cascade-agree", default=False)
def _agree_factory(train: OutcomeTable) -> CascadeStrategy | None:
    """The cascade with agreement rungs among the 6 cheapest models: not a default (3x the fit time)."""
    if len(train.models) < 3:
        return None
    return CascadeStrategy("cascade-agree", set_pool=min(6, len(train.models) - 1))
