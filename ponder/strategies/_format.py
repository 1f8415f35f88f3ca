"""What every strategy file shares: its ``format`` tag, and how a table's model names go live.

Outcome tables name models bare (``gpt-4o-mini``); a strategy file's ``model_map`` maps them to
the ``provider:model`` to call. Without an entry, a name containing ``:`` is used as is and a bare
name ``m`` becomes ``replay:m`` (answered from the table itself).
"""

from __future__ import annotations

__all__ = ["STRATEGY_FORMAT", "live_spec"]

STRATEGY_FORMAT = "ponder-strategy"


def live_spec(model: str, model_map: dict[str, str] | None = None) -> str:
    """Outcome-table model name → ``provider:model`` (map first, ``a:b`` as is, else replay)."""
    if model_map and model in model_map:
        return str(model_map[model])
    return model if ":" in model else f"replay:{model}"
