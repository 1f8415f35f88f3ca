"""The OpenAI-compatible routing server (``ponder serve``) and the fallback-chain strategy.

``create_app`` imports FastAPI lazily, so ``ponder.server._fallback`` (loaded by
``ponder.load_strategy`` for ``kind: "fallback"``) stays light.
"""

from __future__ import annotations

from typing import Any

from ._fallback import AllModelsFailed, FallbackChain

__all__ = ["AllModelsFailed", "FallbackChain", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ._app import create_app

        return create_app
    if name == "serve":
        from ._run import serve

        return serve
    raise AttributeError(name)
