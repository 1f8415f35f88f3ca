"""Live strategies: one protocol for everything that answers requests through a Client.

:class:`LiveStrategy` (``run``, ``arun``, ``astream``, ``models``, ``name``) is implemented by
:class:`SingleModel` and :class:`FallbackChain` here, and by ``ponder.cascade.Cascade``,
``ponder.routers`` live routers and route-then-cascade. The server serves any of them the same
way. Falling through to the next model when one fails is :class:`FallThrough`, written once.
"""

from typing import TYPE_CHECKING

from ._fallback import FallbackChain
from ._fallthrough import FALLTHROUGH, FallThrough, failed_attempt
from ._load import load_strategy, read_strategy_json, resolve_reference
from ._protocol import Chosen, LiveStrategy, StreamEvent, answered, as_live, stream_model
from ._single import SingleModel

if TYPE_CHECKING:  # mypy checks that every built-in strategy implements the protocol
    from ..cascade import Cascade
    from ..routers._live import LiveRouter, RouteThenCascade

    def _builtins(single: SingleModel, chain: FallbackChain, cascade: Cascade, router: LiveRouter,
                  route_cascade: RouteThenCascade) -> list[LiveStrategy]:
        return [single, chain, cascade, router, route_cascade]

__all__ = [
    "FALLTHROUGH",
    "Chosen",
    "FallThrough",
    "FallbackChain",
    "LiveStrategy",
    "SingleModel",
    "StreamEvent",
    "answered",
    "as_live",
    "failed_attempt",
    "load_strategy",
    "read_strategy_json",
    "resolve_reference",
    "stream_model",
]
