"""Route then cascade, evaluated as its own strategy: the router picks the rung where the cascade
starts; the cascade climbs from there as usual.

A query the router believes needs a strong model skips the cheap rungs (their cost and their
latency); an easy one starts at the bottom. The cascade is :class:`ponder.cascade.Cascade`
fitted by its own optimizer; the router is a :class:`~ponder.routers.UtilityRouter` choosing
among the chain's models by argmax(predicted quality − λ·cost). Starting at rung s scores rung s
with no earlier answer in view, exactly as the live cascade does when the lower rungs are skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..evaluation._strategy import OperatingPoint, register_strategy
from ._utility import UtilityRouter

if TYPE_CHECKING:
    from ..evaluation._table import OutcomeTable


def start_rungs(router: Any, queries: list[str], chain_models: list[str], knob: float) -> np.ndarray:
    """Rung index (into ``chain_models``) where each query starts."""
    idx = router._model_indices(chain_models)
    qhat, chat = router.predict_quality(queries), router.predict_cost(queries)
    allowed = np.zeros(qhat.shape, dtype=bool)
    allowed[:, idx] = True
    j = router.choose(qhat, chat, knob, allowed=allowed)
    pos = {int(m): k for k, m in enumerate(idx)}
    return np.array([pos[int(x)] for x in j], dtype=int)


class RouteCascadeStrategy:
    """Offline strategy: every (cascade chain on the train frontier) × (router knob) point."""

    kind = "route-cascade"

    def __init__(self, name: str = "route-cascade", *, n_budgets: int = 10, n_knobs: int = 6,
                 seed: int = 0) -> None:
        self.name = name
        self.n_budgets = n_budgets
        self.n_knobs = n_knobs
        self.seed = seed

    def fit(self, train: OutcomeTable) -> RouteCascadeStrategy:
        from ..cascade import CascadeStrategy

        self.cascade_ = CascadeStrategy(n_budgets=self.n_budgets, seed=self.seed).fit(train)
        self.router_ = UtilityRouter(models=self.cascade_.optimizer_.models_).fit(train)
        return self

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        from .._features import agreement_matrix
        from ..cascade import Cascade

        opt = self.cascade_.optimizer_
        test = test.select_models(opt.models_)
        order = [test.models.index(m) for m in opt.models_]
        nq, nm = len(test.query_ids), len(order)
        s1, s2 = np.zeros((nq, nm)), np.zeros((nq, nm, nm))
        if opt.scorer_ is not None:  # None when every frontier chain is a single model
            agree = agreement_matrix(test.responses)
            from ..scorers import table_signals

            g1, g2 = opt.scorer_.score_grid(test.queries, test.responses, test.models, agree,
                                            table_signals(test))
            s1, s2 = g1[:, order], g2[:, order][:, :, order]
        ids = np.array(test.query_ids, dtype=object)
        router = self.router_
        qhat, chat = router.predict_quality(test.queries), router.predict_cost(test.queries)
        points, seen = [], set()
        for b in self.cascade_.budgets():
            choice = opt.frontier_.best_for_budget(float(b))
            if choice is None or (choice.chain, choice.thresholds) in seen:
                continue
            seen.add((choice.chain, choice.thresholds))
            cascade = opt.build(choice, name=self.name)
            chain = list(choice.chain)
            names = [opt.models_[m] for m in chain]
            cols = router._model_indices(names)
            grid = router.knob_grid(qhat[:, cols], chat[:, cols], n=self.n_knobs)
            for knob in [*grid, np.inf]:  # λ = ∞: always start at the bottom (the plain cascade)
                if np.isinf(knob):
                    start = np.zeros(nq, dtype=int)
                else:
                    start = start_rungs(router, test.queries, names, float(knob))
                cost, qual = np.zeros(nq), np.zeros(nq)
                for s in np.unique(start):
                    rows = np.flatnonzero(start == s)
                    sub = Cascade(cascade.rungs[s:], budget_usd=cascade.budget_usd, name=self.name)
                    sc = np.zeros((rows.size, len(chain) - s))
                    for k in range(len(chain) - s - 1):
                        m = chain[s + k]
                        sc[:, k] = s1[rows, m] if k == 0 else s2[rows, m, chain[s + k - 1]]
                    c, q, _ = sub.replay(test.subset(list(ids[rows])), sc)
                    cost[rows], qual[rows] = c, q
                points.append(OperatingPoint(
                    setting={"chain": names, "thresholds": [round(t, 4) for t in choice.thresholds],
                             "knob": None if np.isinf(knob) else round(float(knob), 8)},
                    cost=cost, quality=qual,
                    extra={"start_share": [float(np.mean(start == s)) for s in range(len(chain))]}))
        return points


@register_strategy("route-cascade")
def _factory(train: OutcomeTable) -> RouteCascadeStrategy | None:
    if len(train.models) < 2:
        return None
    try:
        import ponder.cascade  # noqa: F401
    except ImportError:
        return None
    return RouteCascadeStrategy()
