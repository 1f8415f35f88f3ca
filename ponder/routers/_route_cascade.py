"""Route then cascade, evaluated as its own strategy: the router picks the rung where the cascade
starts; the cascade climbs from there as usual.

A query the router believes needs a strong model skips the cheap rungs (their cost and their
latency); an easy one starts at the bottom. The cascade is :class:`ponder.cascade.Cascade`
fitted by its own optimizer; the router is a :class:`~ponder.routers.UtilityRouter` choosing
among the chain's models by argmax(predicted quality − λ·cost). Starting at rung s scores rung s
with no earlier answer in view, exactly as the live cascade does when the lower rungs are skipped.

A chain that starts with an agreement set (``set_pool`` > 0, see :mod:`ponder.cascade`) is routed
by :class:`AgreementSkip` instead: it predicts, from the query alone, how confidently the set's
cheap models will agree (the set's out-of-fold acceptance score on train), and a query predicted
below the knob goes straight to the next rung (the strong model) without paying for the set.
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


class AgreementSkip:
    """Query → predicted acceptance score of one agreement set: ridge regression on TF-IDF,
    fitted on the set's out-of-fold acceptance scores on train (no answer counts as 0)."""

    def __init__(self, alpha: float = 1.0, max_features: int = 5000) -> None:
        self.alpha = alpha
        self.max_features = max_features

    def fit(self, queries: list[str], scores: np.ndarray) -> AgreementSkip:
        from sklearn.linear_model import Ridge

        from .._features import TextFeaturizer

        y = np.clip(np.nan_to_num(np.asarray(scores, dtype=float), nan=0.0, neginf=0.0), 0, 1)
        self.text_ = TextFeaturizer(max_features=self.max_features).fit(queries)
        self.model_ = Ridge(alpha=self.alpha).fit(self.text_.transform(queries), y)
        return self

    def predict(self, queries: list[str]) -> np.ndarray:
        return np.asarray(self.model_.predict(self.text_.transform(queries)), dtype=float)


class RouteCascadeStrategy:
    """Offline strategy: every (cascade chain on the train frontier) × (router knob) point."""

    kind = "route-cascade"

    def __init__(self, name: str = "route-cascade", *, n_budgets: int = 10, n_knobs: int = 6,
                 seed: int = 0, set_pool: int = 0, n_pareto: int = 0, folds: int = 3,
                 scorer_params: dict[str, Any] | None = None) -> None:
        self.name = name
        self.n_budgets = n_budgets
        self.n_knobs = n_knobs
        self.seed = seed
        self.set_pool = set_pool
        self.n_pareto = n_pareto
        self.folds = folds
        self.scorer_params = scorer_params

    def fit(self, train: OutcomeTable) -> RouteCascadeStrategy:
        from ..cascade import CascadeStrategy

        self.cascade_ = CascadeStrategy(n_budgets=self.n_budgets, seed=self.seed,
                                        set_pool=self.set_pool, n_pareto=self.n_pareto,
                                        folds=self.folds, scorer_params=self.scorer_params
                                        ).fit(train)
        self.router_ = UtilityRouter(models=self.cascade_.optimizer_.models_).fit(train)
        self.skips_: dict[int, AgreementSkip] = {}  # set index → its skip predictor (lazy)
        return self

    def _skip(self, j: int) -> AgreementSkip:
        if j not in self.skips_:
            opt = self.cascade_.optimizer_
            self.skips_[j] = AgreementSkip().fit(list(opt.train_.queries), opt.set_s1_[:, j])
        return self.skips_[j]

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
        for _, choice in self.cascade_.choices():
            if (choice.chain, choice.thresholds) in seen:
                continue
            seen.add((choice.chain, choice.thresholds))
            cascade = opt.build(choice, name=self.name)
            chain = list(choice.chain)
            names = opt.describe(chain)
            if chain[0] >= nm:  # an agreement set first: skip it where it rarely agrees
                pred = self._skip(chain[0] - nm).predict(test.queries)
                grid = np.unique(np.quantile(pred, np.linspace(0.05, 0.5, self.n_knobs)))
                knobs = [*grid, np.inf] if len(chain) > 1 else [np.inf]
            else:
                cols = router._model_indices(names)
                knobs = [*router.knob_grid(qhat[:, cols], chat[:, cols], n=self.n_knobs), np.inf]
            for knob in knobs:  # ∞: always start at the bottom (the plain cascade)
                if np.isinf(knob):
                    start = np.zeros(nq, dtype=int)
                elif chain[0] >= nm:
                    start = (pred < knob).astype(int)
                else:
                    start = start_rungs(router, test.queries, names, float(knob))
                cost, qual = np.zeros(nq), np.zeros(nq)
                for s in np.unique(start):
                    rows = np.flatnonzero(start == s)
                    sub = Cascade(cascade.rungs[s:], budget_usd=cascade.budget_usd, name=self.name)
                    sc, members = opt.replay_scores(chain[s:], s1[rows], s2[rows])
                    c, q, _ = sub.replay(test.subset(list(ids[rows])), sc, members)
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
