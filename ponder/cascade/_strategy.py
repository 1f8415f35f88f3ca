"""The cascade as an evaluation strategy: ``ponder eval`` fits it on train and sweeps budgets on test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._features import agreement_matrix
from ..evaluation import OperatingPoint, register_strategy
from ..scorers import table_signals
from ._fit import CascadeOptimizer

if TYPE_CHECKING:
    from ..evaluation import OutcomeTable

__all__ = ["CascadeStrategy"]


class CascadeStrategy:
    """Fit scorers (cross-fitted) and the chain frontier on train; replay budgets on test."""

    kind = "cascade"

    def __init__(self, name: str = "cascade", *, n_budgets: int = 16, max_length: int = 3,
                 folds: int = 3, scorer_params: dict[str, Any] | None = None, seed: int = 0) -> None:
        self.name = name
        self.n_budgets = n_budgets
        self.max_length = max_length
        self.folds = folds
        self.scorer_params = scorer_params
        self.seed = seed

    def fit(self, train: OutcomeTable) -> CascadeStrategy:
        self.optimizer_ = CascadeOptimizer(max_length=self.max_length, folds=self.folds,
                                           scorer_params=self.scorer_params, seed=self.seed)
        self.optimizer_.fit(train)
        return self

    def budgets(self) -> np.ndarray:
        """Budgets spanning the train frontier, log-spaced from its cheapest to its dearest point."""
        f = self.optimizer_.frontier_
        lo, hi = float(f.cost.min()), float(np.nanmax(self.optimizer_.mean_cost_))
        lo = max(lo, 1e-12)
        return np.geomspace(lo, max(hi, lo * 1.0001), self.n_budgets)

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        opt = self.optimizer_
        test = test.select_models(opt.models_)
        order = [test.models.index(m) for m in opt.models_]
        if opt.scorer_ is not None:
            agree = agreement_matrix(test.responses)
            g1, g2 = opt.scorer_.score_grid(test.queries, test.responses, test.models, agree,
                                            table_signals(test))
            s1 = g1[:, order]
            s2 = g2[:, order][:, :, order]
        points, seen = [], set()
        for b in self.budgets():
            choice = opt.frontier_.best_for_budget(float(b))
            if choice is None:
                continue
            key = (choice.chain, choice.thresholds)
            if key in seen:
                continue
            seen.add(key)
            cascade = opt.build(choice, name=self.name)
            scores = np.zeros((len(test.query_ids), len(choice.chain)))
            for k, m in enumerate(choice.chain[:-1]):
                scores[:, k] = s1[:, m] if k == 0 else s2[:, m, choice.chain[k - 1]]
            cost, qual, _ = cascade.replay(test, scores)
            points.append(OperatingPoint(
                setting={"budget_usd": float(b), "chain": [opt.models_[m] for m in choice.chain],
                         "thresholds": [round(t, 4) for t in choice.thresholds]},
                cost=cost, quality=qual,
                extra={"train_cost": choice.cost, "train_quality": choice.quality}))
        return points


@register_strategy("cascade")
def _factory(train: OutcomeTable) -> CascadeStrategy | None:
    if len(train.models) < 2:
        return None
    return CascadeStrategy()
