"""Live strategies: one protocol for everything that answers requests through a Client.

:class:`LiveStrategy` (``run``, ``arun``, ``astream``, ``models``, ``name``) is implemented by
:class:`SingleModel` and :class:`FallbackChain` here, and by ``ponder.cascade.Cascade``,
``ponder.routers`` live routers and route-then-cascade. The server serves any of them the same
way. Falling through to the next model when one fails is :class:`FallThrough`, written once.
(mypy checks that each of them implements the protocol at the end of ``ponder/routers/_live.py``,
the one module above them all, so that this package imports none of them.)
"""

from ._fallthrough import FALLTHROUGH, FallbackChain, FallThrough, SingleModel, failed_attempt
from ._load import (
    STRATEGY_FORMAT,
    live_model_map,
    live_spec,
    load_strategy,
    read_strategy_json,
    resolve,
    resolve_reference,
)
from ._protocol import Chosen, LiveStrategy, StreamEvent, answered, as_live, stream_model

__all__ = ["FALLTHROUGH", "STRATEGY_FORMAT", "Chosen", "FallThrough", "FallbackChain",
           "LiveStrategy", "SingleModel", "StreamEvent", "answered", "as_live", "failed_attempt",
           "live_model_map", "live_spec", "load_strategy", "read_strategy_json", "resolve",
           "resolve_reference", "stream_model"]
