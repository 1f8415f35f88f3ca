"""Fuzz the server's own OpenAPI schema with schemathesis over real HTTP: no 500s, no hangs,
responses that match the schema, invalid input rejected with 4xx, valid input accepted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.server._serverkit import free_port

pytestmark = pytest.mark.slow  # each test here takes a second or more on 2 cores (see the README: fast lane)

SERVE = """
import sys
sys.path[:0] = [sys.argv[1]]
from tests.server._serverkit import FakeLLMServer, make_config
from ponder import Client
from ponder.server import FallbackChain, create_app, serve
with FakeLLMServer() as upstream:
    client = Client(make_config({"up": upstream.url}), cache=False)
    app = create_app(client, {"chain": FallbackChain(["up:m"])}, models=["up:m"], max_body_bytes=256 * 1024)
    serve(app, port=int(sys.argv[2]), log_level="warning")
"""


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    # the server runs in its own process: fuzzing hammers it as a separate client would, and
    # CPython 3.11's thread-unsafe AST recursion counter is kept out of the way
    port = free_port()
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(here.parents[1]), str(port)], env=env,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start: " + (proc.stderr.read() if proc.stderr else b"").decode()[-2000:])
            time.sleep(0.1)
        schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
        # A body over max_body_bytes is invalid data the server rejects with 413 (declared in its
        # schema); schemathesis's default list of rejections lacks 413, so a large generated body
        # failed the check now and then.
        rejection = schema.config.checks.negative_data_rejection
        rejection.expected_statuses = [*rejection.expected_statuses, "413"]
        yield schema
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


# Hypothesis drives schemathesis's strategies directly: schemathesis's lazy pytest fixture
# integration reaches into pytest internals (``Function._nodeid``) that pytest 9.2 removed.
def test_api_conforms_to_its_schema(api: Any) -> None:
    operations = _operations(api)
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/healthz"}
    for operation in operations:
        cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        @given(case=cases)
        def conforms(case: Any) -> None:
            case.call_and_validate(timeout=10)

        conforms()
