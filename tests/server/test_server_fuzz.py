"""Fuzz the server's own OpenAPI schema with schemathesis over real HTTP: no 500s, no hangs,
responses that match the schema, invalid input rejected with 4xx, valid input accepted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from _serverkit import FakeLLMServer, LiveServer, make_config
from hypothesis import HealthCheck, settings

from ponder import Client
from ponder.server import FallbackChain, create_app


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    with FakeLLMServer() as upstream:
        client = Client(make_config({"up": upstream.url}), cache=False)
        app = create_app(client, {"chain": FallbackChain(["up:m"])}, models=["up:m"],
                         max_body_bytes=256 * 1024)
        with LiveServer(app) as live:
            yield schemathesis.openapi.from_url(live.url + "/openapi.json")
        client.close()


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: Any) -> None:
    case.call_and_validate(timeout=10)
