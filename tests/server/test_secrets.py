"""A planted API key never shows up in cache entries, logs, traces, reports, metrics or error bodies."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from ponder import Client, SingleModel
from ponder._batch import run_batch
from ponder._redis_cache import RedisBackend
from ponder.server import FallbackChain, create_app
from tests.server._serverkit import Action, FakeLLMServer, LiveServer, free_port, make_config

pytestmark = pytest.mark.slow  # each test here takes a second or more on 2 cores (see the README: fast lane)

SECRET = "sk-ponder-planted-" + secrets.token_hex(16)
SERVER_TOKEN = "srv-token-" + secrets.token_hex(16)
NEEDLES = (SECRET, SECRET[-12:], SERVER_TOKEN, SERVER_TOKEN[-12:])


def leaks(blob: bytes | str) -> list[str]:
    data = blob if isinstance(blob, bytes) else blob.encode("utf-8", "replace")
    return [n for n in NEEDLES if n.encode() in data]


@pytest.fixture
def log_capture() -> Iterator[io.StringIO]:
    """Every log record from every logger (ponder, uvicorn, httpx, openai), at DEBUG."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield buf
    for lg, level in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)


@pytest.mark.parametrize("backend", ["disk", "redis"])
def test_planted_key_never_leaks(backend: str, tmp_path: Path, upstream: FakeLLMServer,
                                 monkeypatch: pytest.MonkeyPatch, log_capture: io.StringIO,
                                 request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PLANTED_KEY", SECRET)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        cache_backend: object = RedisBackend(url)
        cache_backend.clear()  # type: ignore[attr-defined]
    else:
        from ponder import DiskCacheBackend

        cache_backend = DiskCacheBackend(tmp_path / "cache")
    cfg = make_config({"up": upstream.url, "dead": dead}, api_key_env="PLANTED_KEY",
                      cache={"enabled": True})
    client = Client(cfg, cache=cache_backend)  # type: ignore[arg-type]
    app = create_app(client, {"chain": FallbackChain(["dead:m", "up:m"])}, models=["up:m"],
                     api_key=SERVER_TOKEN)
    bodies: list[str] = []
    with LiveServer(app, access_log=True) as live:
        sdk = openai.OpenAI(base_url=live.url + "/v1", api_key=SERVER_TOKEN, max_retries=0)
        for model in ("up:m", "ponder/chain"):
            for _ in range(2):  # a miss, then a cache hit
                raw = sdk.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": f"hello {model}"}], temperature=0)
                bodies.append(raw.text + json.dumps(dict(raw.headers)))
            with sdk.chat.completions.with_streaming_response.create(
                    model=model, messages=[{"role": "user", "content": "stream"}], stream=True) as raw:
                bodies.append("".join(raw.iter_lines()) + json.dumps(dict(raw.headers)))
        # upstream errors that quote the key, as real providers do
        for status in (401, 400, 429, 500):
            upstream.queue(Action(kind="status", status=status, body={"error": {
                "message": f"Incorrect API key provided: {SECRET}. Masked: {SECRET[:8]}****{SECRET[-12:]}",
                "type": "invalid_request_error"}}))
            for model in ("up:m", "ponder/chain"):
                if model == "ponder/chain":
                    upstream.queue(Action(kind="status", status=status, body={"error": {"message": f"key {SECRET}"}}))
                r = httpx.post(live.url + "/v1/chat/completions", headers={"authorization": f"Bearer {SERVER_TOKEN}"},
                               json={"model": model, "messages": [{"role": "user", "content": f"fail {status}"}]})
                assert r.status_code >= 400
                bodies.append(r.text + json.dumps(dict(r.headers)))
            upstream.actions.clear()
        # a client with a wrong token (that contains the real one as a prefix) is refused
        r = httpx.get(live.url + "/v1/models", headers={"authorization": f"Bearer {SERVER_TOKEN}x"})
        assert r.status_code == 401
        bodies.append(r.text + json.dumps(dict(r.headers)))
        metrics = httpx.get(live.url + "/metrics", headers={"authorization": f"Bearer {SERVER_TOKEN}"}).text
        assert "ponder_requests_total" in metrics

    # the key really was used upstream, so the checks below are not vacuous
    assert any(r["headers"].get("authorization") == f"Bearer {SECRET}" for r in upstream.requests)

    # batch report: successes with traces and failures with error messages
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "prompt": f"batch {i}", "temperature": 0}) + "\n" for i in range(4)))
    upstream.queue(Action(kind="status", status=400, body={"error": {"message": f"bad key {SECRET}"}}))
    out = tmp_path / "out.jsonl"
    summary = run_batch(inp, out, SingleModel("up:m"), Client(cfg, cache=cache_backend), concurrency=1)  # type: ignore[arg-type]
    assert summary.failed == 1
    report = out.read_text()
    assert "error" in report

    cache_blobs: list[bytes] = []
    if backend == "redis":
        r = cache_backend._redis  # type: ignore[attr-defined]
        keys = list(r.scan_iter("*"))
        assert keys
        for k in keys:
            cache_blobs.append(k)
            cache_blobs.append(r.dump(k) or b"")
    else:
        files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
        assert files
        cache_blobs = [p.read_bytes() for p in files] + [str(p).encode() for p in files]
    client.close()

    captured = capsys.readouterr()
    logs = log_capture.getvalue()
    assert "up:m" in logs or "GET /v1/models" in logs or "POST /v1/chat/completions" in logs
    places = {
        "error and answer bodies": "\n".join(bodies),
        "metrics": metrics,
        "batch report": report,
        "logs": logs,
        "stdout/stderr": captured.out + captured.err,
    }
    assert "[redacted]" in places["error and answer bodies"]  # upstream messages were passed on, scrubbed
    assert "[redacted]" in report
    for where, text in places.items():
        assert not leaks(text), f"key found in {where}"
    for blob in cache_blobs:
        assert not leaks(blob), "key found in the cache"
