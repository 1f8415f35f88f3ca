"""Kept for imports from before ``ponder.strategies``: everything lives there now."""

from .strategies._load import (
    MAX_STRATEGY_BYTES,
    load_strategy,
    read_strategy_json,
    resolve_reference,
)
from .strategies._single import SingleModel

__all__ = ["MAX_STRATEGY_BYTES", "SingleModel", "load_strategy", "read_strategy_json", "resolve_reference"]
