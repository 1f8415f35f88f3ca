"""Run the app under uvicorn (``ponder serve``)."""

from __future__ import annotations

from typing import Any


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          access_log: bool = False) -> None:
    """Serve until interrupted. Access logs are off by default (one line per request is noise)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log,
                timeout_graceful_shutdown=10)
