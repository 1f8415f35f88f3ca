"""Live strategies: one protocol (:class:`LiveStrategy`) for everything that answers requests
through a Client, so the server serves each the same way. (mypy checks the implementations at the
end of ``ponder/routers/_live.py``, above them all, so that this package imports none of them.)
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
