"""Run the app under uvicorn (``ponder serve``)."""

from __future__ import annotations

import copy
from typing import Any


def log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's logging config, with ponder's own loggers on uvicorn's stderr handler (so the
    server's warnings look like uvicorn's and pass the same secret filter)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["ponder"] = {"handlers": ["default"], "level": log_level.upper(), "propagate": False}
    return config


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          access_log: bool = False) -> None:
    """Serve until interrupted. Access logs are off by default (one line per request is noise).

    Every log handler uvicorn and ponder use scrubs registered secrets (``install_log_scrubbing``),
    installed once uvicorn has configured logging and before the first request.
    """
    import uvicorn

    from .._secrets import install_log_scrubbing

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            log_config=log_config(log_level), timeout_graceful_shutdown=10)
    install_log_scrubbing()  # uvicorn.Config configured logging: its handlers exist now
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:  # as uvicorn.run does
        pass
