"""Routers as ``ponder eval`` strategies: fit on the train rows, sweep the knob on the test rows.

The knob values of a sweep are quantiles of the router's own predictions on the test queries
(labels unused), as RouteLLM calibrates thresholds on score quantiles; each value is one
operating point with the realised per-query cost and quality.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation._strategy import OperatingPoint, register_strategy
from ._base import BaseRouter
from ._knn import KNNRouter
from ._mf import MFRouter
from ._pairwise import PairwiseRouter
from ._utility import UtilityRouter

if TYPE_CHECKING:
    from ..evaluation._table import OutcomeTable


class RouterStrategy:
    """Adapter from a router to the evaluator's Strategy protocol."""

    kind = "router"

    def __init__(self, name: str, make: Callable[[], BaseRouter], n_points: int = 60) -> None:
        self.name = name
        self.make = make
        self.n_points = n_points

    def fit(self, train: OutcomeTable) -> RouterStrategy:
        self.router_ = self.make().fit(train)
        return self

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        r = self.router_
        qhat = r.predict_quality(test.queries)
        chat = r.predict_cost(test.queries)
        knobs = r.knob_grid(qhat, chat, n=self.n_points)
        points = []
        for knob, cost, quality, choice in r.replay(test, knobs):
            extra = {"strong_share": float(np.mean(choice == r.strong_))}
            points.append(OperatingPoint({"knob": round(knob, 10), "router": r.kind}, cost,
                                         quality, extra))
        return points


def _pairwise_applies(train: OutcomeTable) -> bool:
    if len(train.models) < 2:
        return False
    means = np.nanmean(np.where(train.present, train.scores, np.nan), axis=0)
    return bool(np.nanargmax(means) != 0)  # cheapest is not also the best


def _factory(name: str, make: Callable[[], BaseRouter], pairwise: bool = False) -> None:
    @register_strategy(name)
    def factory(train: OutcomeTable) -> RouterStrategy | None:
        if len(train.models) < 2 or (pairwise and not _pairwise_applies(train)):
            return None
        return RouterStrategy(name, make)


_factory("router-pairwise-det", lambda: PairwiseRouter(variant="deterministic"), pairwise=True)
_factory("router-pairwise-prob", lambda: PairwiseRouter(variant="probabilistic"), pairwise=True)
_factory("router-pairwise-trans", lambda: PairwiseRouter(variant="transformed"), pairwise=True)
_factory("router-utility", lambda: UtilityRouter())
_factory("router-knn", lambda: KNNRouter())
_factory("router-mf", lambda: MFRouter())
