"""Routers as ``ponder eval`` strategies: fit on the train rows, sweep the knob on the test rows.

The knob values of a sweep are quantiles of the router's own predictions on the test queries
(labels unused), as RouteLLM calibrates thresholds on score quantiles; each value is one
operating point with the realised per-query cost and quality.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator

from ..evaluation._strategy import OperatingPoint, register_strategy
from ..strategies import live_model_map
from ._base import BaseRouter
from ._io import ROUTER_KINDS
from ._pairwise import VARIANTS
from ._route_cascade import blank_missing, nearest_knob

if TYPE_CHECKING:
    from ..evaluation._table import OutcomeTable
    from ._live import LiveRouter


class RouterStrategy(BaseEstimator):  # type: ignore[misc]  # scikit-learn is untyped
    """Adapter from a router to the evaluator's Strategy protocol.

    A scikit-learn estimator: its parameters are ``name``, ``make`` (a callable returning an
    unfitted router) and ``n_points``; ``fit`` learns ``router_``."""

    kind = "router"

    def __init__(self, name: str, make: Callable[[], BaseRouter], n_points: int = 60) -> None:
        self.name = name
        self.make = make
        self.n_points = n_points

    def fit(self, train: OutcomeTable) -> RouterStrategy:
        self.router_ = self.make().fit(train)
        return self

    def live(self, setting: dict[str, Any], *, name: str | None = None,
             model_map: dict[str, str] | None = None, config: Any = None) -> LiveRouter:
        """The live router of ``setting``: this fitted router at the setting's λ, as the file
        :meth:`save` writes for it loads (``config``: its ``[models]`` aliases name live specs
        for the router's models that ``model_map`` leaves out; see
        :func:`ponder.strategies.live_model_map`)."""
        from ._live import LiveRouter

        return LiveRouter(self.router_, name=name or self.name, knob=float(setting["knob"]),
                          model_map=live_model_map(self.router_.models_, model_map, config))

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        r = self.router_
        qhat = r.predict_quality(test.queries)
        chat = r.predict_cost(test.queries)
        return self._points(test, r.knob_grid(qhat, chat, n=self.n_points), chat)

    def replay(self, test: OutcomeTable, settings: list[dict[str, Any]]) -> list[OperatingPoint]:
        """These settings (taken from another fit of this strategy) on ``test``.

        The same λ can mean another spend for another fit (its predicted qualities differ), so a
        setting is matched by what it does: this fit's knob whose *predicted* spend on these
        queries (the router's cost model; no labels) is nearest the setting's predicted spend on
        the queries it was swept on. Where this fit cannot come within 10% of that spend (a fit
        that routes every query alike), the setting has no counterpart here: its point is NaN,
        so it cannot be calibrated. A setting without a predicted spend replays its λ as is."""
        r = self.router_
        qhat, chat = r.predict_quality(test.queries), r.predict_cost(test.queries)
        grid = np.asarray(r.knob_grid(qhat, chat, n=max(4 * self.n_points, 240)), dtype=float)
        rows = np.arange(len(test.queries))
        spend = np.array([float(np.mean(chat[rows, r.choose(qhat, chat, float(k))]))
                          for k in grid]) if len(rows) else np.zeros(len(grid))
        knobs, missing = [], []
        for s in settings:
            want = s.get("predicted_cost_usd")
            if want is None or not len(grid):
                knob, gone = float(s["knob"]), False
            else:
                knob, gone = nearest_knob(grid, spend, float(want))
            knobs.append(knob)
            missing.append(gone)
        return blank_missing(self._points(test, knobs, chat), missing, len(rows))

    def _points(self, test: OutcomeTable, knobs: Any, chat: np.ndarray) -> list[OperatingPoint]:
        r = self.router_
        rows = np.arange(len(test.queries))
        points = []
        for knob, cost, quality, choice in r.replay(test, knobs):
            extra = {"strong_share": float(np.mean(choice == r.strong_))}
            # the exact λ measured: a shipped file must make the very decisions replayed here
            setting = {"knob": float(knob), "router": r.kind,
                       "predicted_cost_usd": float(np.mean(chat[rows, choice])) if len(rows)
                       else None}
            points.append(OperatingPoint(setting, cost, quality, extra))
        return points

    def save(self, setting: dict[str, Any], directory: str | Path, *, name: str,
             model_map: dict[str, str] | None = None) -> Path:
        """Write this fitted router and a strategy file pinning ``setting``'s λ into
        ``directory``; returns the strategy file."""
        from ._io import save_router
        from ._live import write_strategy_file

        directory = Path(directory)
        save_router(self.router_, directory / "router")
        return write_strategy_file(directory / "strategy.json", directory / "router",
                                   kind="router", name=name, knob=float(setting["knob"]),
                                   model_map=model_map)


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


# Every kind of ROUTER_KINDS is a strategy, router-KIND; the pairwise one once per label variant.
_SHORT = {"deterministic": "det", "probabilistic": "prob", "transformed": "trans"}
for _kind, _cls in ROUTER_KINDS.items():
    if _kind == "pairwise":
        for _v in VARIANTS:
            _factory(f"router-pairwise-{_SHORT.get(_v, _v)}", partial(_cls, variant=_v), pairwise=True)
    else:
        _factory(f"router-{_kind}", _cls)
