"""Query routers: pick a model from the query alone, before anything is generated; a knob moves
each along its cost/quality curve, ``calibrate`` sets it (strong share, budget, quality floor).

    router = UtilityRouter().fit(train)
    router.route("What is 2 + 2?")  # RouteDecision(model=..., quality={...}, cost={...})
"""

from . import _strategies as _strategies  # noqa: I001  (registers the router strategies)
from ._base import BaseRouter, Calibration, RouteDecision
from ._io import ROUTER_KINDS, load_router, save_router
from ._knn import KNNRouter
from ._live import LiveRouter, RouteThenCascade, load_strategy_file, write_strategy_file
from ._mf import MFRouter
from ._pairwise import OracleRouter, PairwiseRouter, RandomRouter
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
