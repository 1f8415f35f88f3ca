from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's keys, config or cache."""
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL",
                "PONDER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PONDER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    """Keys registered for scrubbing are process-wide: one test's planted key must not redact
    another test's messages."""
    from ponder._secrets import forget_secrets

    forget_secrets()
    yield
    forget_secrets()


@pytest.fixture
def fake_server():
    from tests.fakeserver import FakeLLMServer

    with FakeLLMServer() as srv:
        yield srv
