"""The OpenAI-compatible routing server (``ponder serve``); ``create_app`` imports FastAPI lazily.
``FallbackChain`` is re-exported here, where it was first published."""

from __future__ import annotations

import copy
from contextlib import suppress
from typing import Any

from .._exceptions import AllModelsFailed
from ..strategies import FallbackChain

__all__ = ["AllModelsFailed", "FallbackChain", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ._app import create_app

        return create_app
    raise AttributeError(name)


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          access_log: bool = False) -> None:
    """Serve ``app`` under uvicorn until interrupted; ponder's loggers use uvicorn's stderr
    handler, and every handler scrubs registered secrets."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from .._secrets import install_log_scrubbing

    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["ponder"] = {"handlers": ["default"], "level": log_level.upper(),
                                       "propagate": False}
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            log_config=log_config, timeout_graceful_shutdown=10)
    install_log_scrubbing()  # uvicorn.Config configured logging: its handlers exist now
    with suppress(KeyboardInterrupt):  # as uvicorn.run does
        uvicorn.Server(config).run()
