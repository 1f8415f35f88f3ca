"""What every strategy file shares: its ``format`` tag, and how a table's model names go live.

Outcome tables name models bare (``gpt-4o-mini``); a strategy file's ``model_map`` maps them to
the ``provider:model`` to call. Without an entry, a name containing ``:`` is used as is and a bare
name ``m`` becomes ``replay:m`` (answered from the table itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["STRATEGY_FORMAT", "live_model_map", "live_spec"]

STRATEGY_FORMAT = "ponder-strategy"


def live_spec(model: str, model_map: dict[str, str] | None = None) -> str:
    """Outcome-table model name → ``provider:model`` (map first, ``a:b`` as is, else replay)."""
    if model_map and model in model_map:
        return str(model_map[model])
    return model if ":" in model else f"replay:{model}"


def live_model_map(models: Iterable[str], model_map: dict[str, str] | None = None,
                   config: Any = None) -> dict[str, str] | None:
    """The ``model_map`` a strategy over ``models`` goes live with: ``model_map``'s entries, and
    for a model it does not name, ``config``'s ``[models]`` alias of that very name (a config's
    ``gpt4 = "openai:gpt-4o"`` sends the table's model ``gpt4`` there). None when both are empty."""
    aliases = getattr(config, "models", None) or {}
    out = {m: str(aliases[m]) for m in models if m in aliases}
    out.update(model_map or {})
    return out or None
