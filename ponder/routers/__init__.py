"""Query routers: pick a model from the query alone, before anything is generated.

Routers are scikit-learn style estimators fitted on an outcome table (``fit(train)``); a knob
moves each one along its cost/quality curve and ``calibrate`` sets it for a target share of
strong-model calls, a budget, or a quality floor with an (ε, δ) guarantee. They save as JSON +
npz, register as ``ponder eval`` strategies, and answer live requests from a strategy file
(``ponder ask --strategy router.json``).

    router = UtilityRouter().fit(train)
    router.route("What is 2 + 2?")  # RouteDecision(model=..., quality={...}, cost={...})
"""

from . import _strategies as _strategies  # noqa: I001  (registers the router strategies)
from ._base import BaseRouter, Calibration, RouteDecision
from ._baselines import OracleRouter, RandomRouter
from ._io import ROUTER_KINDS, load_router, save_router
from ._knn import KNNRouter
from ._live import LiveRouter, RouteThenCascade, load_strategy_file, write_strategy_file
from ._mf import MFRouter
from ._pairwise import PairwiseRouter
from ._utility import UtilityRouter

__all__ = [
    "ROUTER_KINDS",
    "BaseRouter",
    "Calibration",
    "KNNRouter",
    "LiveRouter",
    "MFRouter",
    "OracleRouter",
    "PairwiseRouter",
    "RandomRouter",
    "RouteDecision",
    "RouteThenCascade",
    "UtilityRouter",
    "load_router",
    "load_strategy_file",
    "save_router",
    "write_strategy_file",
]
