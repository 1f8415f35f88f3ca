"""Helpers for the server tests: a config pointing at fake upstreams, a real uvicorn, a real redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from typing import Any

from tests.fakeserver import Action, FakeLLMServer, _Handler  # noqa: E402

# Bursts of hundreds of concurrent requests must not overflow the listen backlog (a dropped SYN
# is retried after 1 s, i.e. a spurious timeout), and headers + body written separately must not
# wait on delayed ACKs. (Also set in fakeserver.py itself; kept here so these tests never depend
# on it.)
FakeLLMServer._HTTP.request_queue_size = max(FakeLLMServer._HTTP.request_queue_size, 512)
_Handler.disable_nagle_algorithm = True

from ponder import Config  # noqa: E402

__all__ = ["Action", "FakeLLMServer", "LiveServer", "free_port", "make_config", "start_redis"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(upstreams: dict[str, str], *, cache: dict[str, Any] | None = None,
                retries: int = 0, timeout_s: float = 30.0, api_key_env: str | None = None,
                **extra: Any) -> Config:
    """A config with one OpenAI-type provider per fake upstream (name -> base URL)."""
    providers = {name: {"type": "openai", "base_url": url, "max_retries": retries,
                        "timeout_s": timeout_s, "backoff_initial_s": 0.01, "backoff_max_s": 0.05,
                        **({"api_key_env": api_key_env} if api_key_env else {})}
                 for name, url in upstreams.items()}
    prices = {f"{name}:m": {"input": 1.0, "output": 2.0} for name in upstreams}
    return Config.model_validate({"providers": providers, "prices": prices,
                                  "cache": cache or {"enabled": False}, **extra})


class LiveServer:
    """The ASGI app served by a real uvicorn on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, app: Any, *, access_log: bool = False) -> None:
        import uvicorn

        self.sock = socket.socket()  # bound here, so no other process can take the port meanwhile
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log,
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def start_redis(binary: str | None = None, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a free port; skips the calling test when none is installed."""
    binary = binary or shutil.which("redis-server")
    if binary is None:
        import pytest

        pytest.skip("redis-server not installed (apt-get install redis-server); .ci/run installs it")
    port = port or free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def tiny_table() -> Any:
    """40 queries: the cheap model fails the hard half (proofs), the strong one answers all."""
    import pandas as pd

    from ponder.evaluation import read_outcomes

    rows = []
    for i in range(40):
        hard = i % 2 == 0
        q = f"prove the theorem about primes number {i}" if hard else f"say hello to friend number {i}"
        rows.append({"query_id": f"q{i}", "query": q, "model": "cheap", "score": 0.0 if hard else 1.0,
                     "cost_usd": 1e-6, "response": "i am not sure" if hard else f"hello friend {i}"})
        rows.append({"query_id": f"q{i}", "query": q, "model": "strong", "score": 1.0, "cost_usd": 1e-4,
                     "response": f"the proof goes like this {i}" if hard else f"hello friend {i}"})
    return read_outcomes(pd.DataFrame(rows))
