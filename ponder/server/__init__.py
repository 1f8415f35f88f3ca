"""The OpenAI-compatible routing server (``ponder serve``).

``create_app`` imports FastAPI lazily. ``FallbackChain`` lives in ``ponder.strategies`` and is
re-exported here, where it was first published.
"""

from __future__ import annotations

from typing import Any

from .._exceptions import AllModelsFailed
from ..strategies import FallbackChain

__all__ = ["AllModelsFailed", "FallbackChain", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ._app import create_app

        return create_app
    if name == "serve":
        from ._run import serve

        return serve
    raise AttributeError(name)
