"""Fixtures for the server tests: fake upstreams and a real redis-server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server._serverkit import FakeLLMServer, start_redis  # noqa: E402


@pytest.fixture
def upstream() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def upstream2() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_ambient_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("PONDER_CONFIG", raising=False)
    monkeypatch.setenv("PONDER_CACHE_DIR", str(tmp_path / "default-cache"))


# --- a real redis-server ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """$PONDER_TEST_REDIS_URL, else a private redis-server on a free port, else skip."""
    env = os.environ.get("PONDER_TEST_REDIS_URL")
    if env:
        yield env
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (apt-get install redis-server) and "
                    "PONDER_TEST_REDIS_URL not set")
    proc, url = start_redis(binary)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
