"""Requests that try to hurt the server: one request must not freeze it (a body under the size
limit with 100,000 tiny messages), the schema must not list the models to anyone when
``/v1/models`` needs a key, and no error body or log line may quote a fragment of a key."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ponder import Client
from ponder.server import FallbackChain, create_app
from tests.server._serverkit import Action, FakeLLMServer, LiveServer, free_port, make_config

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
# Keys drawn from letters that ids, ports, timestamps and English hardly use, so a 4-character
# fragment found in a body or a log line is a leak, not a coincidence.
_RARE = "qxzjkvwy"
_rng = random.Random(1234)
UPSTREAM_KEY = "sk-proj-" + "".join(_rng.choice(_RARE + _RARE.upper()) for _ in range(40))
SERVER_TOKEN = "srvtok" + "".join(_rng.choice(_RARE) for _ in range(32))


def chat_body(n: int, content: Any = "x", model: str = "up:m") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}] * n}).encode()


def post(url: str, raw: bytes, timeout: float = 30.0, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url + CHAT, content=raw, timeout=timeout,
                      headers={"content-type": "application/json", **(headers or {})})


@pytest.fixture
def served(upstream: FakeLLMServer) -> Iterator[tuple[LiveServer, FakeLLMServer]]:
    client = Client(make_config({"up": upstream.url}), cache=False)
    with LiveServer(create_app(client, {}, models=["up:m"])) as live:
        yield live, upstream
    client.close()


# --- 1. one request cannot freeze the server ---------------------------------------------------
def test_too_many_messages_are_refused_before_any_work(served: tuple[LiveServer, FakeLLMServer]) -> None:
    live, upstream = served
    tiny = chat_body(115_000)  # 3.9 MB: under the 4 MB body limit
    assert 3_500_000 < len(tiny) < 4 * 1024 * 1024
    cases = {"just over": (chat_body(2049), 2049), "tiny messages": (tiny, 115_000)}
    for name, (raw, n) in cases.items():
        start = time.perf_counter()
        r = post(live.url, raw, timeout=10)
        elapsed = time.perf_counter() - start
        assert r.status_code == 400, (name, r.text[:300])
        err = r.json()["error"]
        assert err["code"] == "array_above_max_length" and err["param"] == "messages"
        assert err["type"] == "invalid_request_error"
        assert "2048" in err["message"] and str(n) in err["message"] and "--max-messages" in err["message"]
        assert elapsed < 2.0, f"{name}: refused after {elapsed:.2f}s"
    # content parts count too: one message with 3,000 parts is as much work as 3,000 messages
    parts = chat_body(1, [{"type": "text", "text": "x"}] * 3000)
    r = post(live.url, parts)
    assert r.status_code == 400 and r.json()["error"]["code"] == "array_above_max_length"
    assert "3000" in r.json()["error"]["message"]
    assert upstream.count == 0  # nothing was sent upstream
    # at the limit, and braces in the text (which the quick count sees) are fine
    r = post(live.url, chat_body(2048, "{x}"))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: {x}"


@pytest.mark.slow
def test_healthz_answers_while_the_largest_requests_are_in_flight(
        served: tuple[LiveServer, FakeLLMServer]) -> None:
    live, upstream = served
    upstream.queue(Action(kind="ok", delay_s=2.0))  # a slow upstream keeps the big one in flight
    biggest = chat_body(2048, "y" * 1900)  # the most messages, in a body near the size limit
    assert 3_900_000 < len(biggest) < 4 * 1024 * 1024
    refused = chat_body(115_000)  # the 37-second body of the issue
    results: dict[str, int] = {}

    def send(name: str, raw: bytes) -> None:
        results[name] = post(live.url, raw, timeout=60).status_code

    threads = [threading.Thread(target=send, args=a) for a in (("biggest", biggest), ("refused", refused))]
    for t in threads:
        t.start()
    worst, polls = 0.0, 0
    with httpx.Client(timeout=10) as h:
        while any(t.is_alive() for t in threads):
            start = time.perf_counter()
            assert h.get(live.url + "/healthz").status_code == 200
            worst = max(worst, time.perf_counter() - start)
            polls += 1
            time.sleep(0.02)
    for t in threads:
        t.join()
    assert polls >= 10 and worst < 1.0, f"/healthz took {worst:.2f}s while big requests were in flight"
    assert results == {"biggest": 200, "refused": 400}
    assert len(upstream.requests[-1]["body"]["messages"]) == 2048


def test_the_message_limit_is_configurable(upstream: FakeLLMServer) -> None:
    client = Client(make_config({"up": upstream.url}), cache=False)
    with LiveServer(create_app(client, {}, models=["up:m"], max_messages=3)) as live:
        assert post(live.url, chat_body(3)).status_code == 200
        r = post(live.url, chat_body(4))
        assert r.status_code == 400 and "at most 3" in r.json()["error"]["message"]
        two_parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
        assert post(live.url, chat_body(1, two_parts)).status_code == 200
        assert post(live.url, chat_body(2, two_parts)).status_code == 400  # 4 parts in all
        schema = httpx.get(live.url + "/openapi.json").json()
        messages = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]["messages"]
        assert messages["maxItems"] == 3 and messages["minItems"] == 1
    client.close()
    with pytest.raises(ValueError, match="max_messages"):
        create_app(Client(make_config({"up": upstream.url}), cache=False), {}, models=["up:m"], max_messages=0)


# --- 2. the schema and docs need the key when the models list does -----------------------------
@pytest.mark.slow
def test_schema_and_docs_need_the_key_when_the_server_has_one(upstream: FakeLLMServer) -> None:
    client = Client(make_config({"up": upstream.url}), cache=False)
    auth = {"authorization": f"Bearer {SERVER_TOKEN}"}
    with LiveServer(create_app(client, {"chain": FallbackChain(["up:m"])}, models=["up:m"],
                               api_key=SERVER_TOKEN)) as live:
        for path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/v1/models", "/metrics"):
            r = httpx.get(live.url + path)
            assert r.status_code == 401, path
            assert "up:m" not in r.text and "chain" not in r.text
            assert r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(live.url + "/healthz").status_code == 200  # load balancers probe it bare
        schema = httpx.get(live.url + "/openapi.json", headers=auth)
        assert schema.status_code == 200
        assert "up:m" in schema.json()["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["enum"]
        assert httpx.get(live.url + "/docs", headers=auth).status_code == 404  # no UI that cannot send the key
    with LiveServer(create_app(client, {}, models=["up:m"])) as live:  # no key: all open, as before
        assert httpx.get(live.url + "/openapi.json").status_code == 200
        assert httpx.get(live.url + "/docs").status_code == 200
    client.close()


# --- 3. no fragment of a key in any body or log line --------------------------------------------
def fragments(secret: str, public: str = "") -> set[str]:
    """Every 4-character piece of ``secret`` that is not wholly inside its public prefix."""
    low = secret.lower()
    return {low[i:i + 4] for i in range(max(0, len(public) - 3), len(low) - 3)}


def leaked(text: str) -> list[str]:
    low = text.lower()
    found = [f for f in fragments(UPSTREAM_KEY, "sk-proj-") if f in low]
    return sorted(found + [f for f in fragments(SERVER_TOKEN) if f in low])


def echoing_key(status: int) -> Action:
    """An upstream error that quotes the key, as real providers do: whole, masked, cut, upper-cased."""
    k = UPSTREAM_KEY
    return Action(kind="status", status=status, body={"error": {"type": "invalid_request_error", "message": (
        f"Incorrect API key provided: {k}. Yours ends in ...{k[-6:]}; masked {k[:11]}****{k[-4:]}; "
        f"fragment {k[14:22].upper()}")}})


class Exploding:
    """A strategy whose failure text quotes both keys (a foreign exception, not a ponder error)."""

    name = "exploding"
    models: list[str] = []

    async def arun(self, request: Any, client: Any) -> Any:
        raise RuntimeError(f"could not reach upstream with {UPSTREAM_KEY} for token {SERVER_TOKEN[3:20]}")


@pytest.fixture
def all_logs() -> Iterator[io.StringIO]:
    """Every record of every logger at DEBUG, through a handler without any secret filter: what
    ponder logs must be clean at the source."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(n) for n in ("", "ponder", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
    yield buf
    for lg, level, propagate in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)
        lg.propagate = propagate


def test_no_key_fragment_in_error_bodies_or_logs(upstream: FakeLLMServer, monkeypatch: pytest.MonkeyPatch,
                                                 all_logs: io.StringIO) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)
    client = Client(make_config({"up": upstream.url}, api_key_env="UPSTREAM_KEY"), cache=False)
    app = create_app(client, {"chain": FallbackChain(["up:m", "up:m"]), "boom": Exploding()},
                     models=["up:m"], api_key=SERVER_TOKEN)
    auth = {"authorization": f"Bearer {SERVER_TOKEN}"}
    texts: list[str] = []
    with LiveServer(app, access_log=True) as live:
        ok = post(live.url, chat_body(1, "hello"), headers=auth)
        assert ok.status_code == 200
        assert upstream.requests[-1]["headers"].get("authorization") == f"Bearer {UPSTREAM_KEY}"  # not vacuous
        for status in (400, 500):
            for model, stream in (("up:m", False), ("up:m", True), ("ponder/chain", False)):
                upstream.queue(echoing_key(status), echoing_key(status))
                raw = json.dumps({"model": model, "stream": stream,
                                  "messages": [{"role": "user", "content": "fail"}]}).encode()
                r = post(live.url, raw, headers=auth)
                assert r.status_code >= 400 or "error" in r.text, r.text
                texts.append(r.text + json.dumps(dict(r.headers)))
                upstream.actions.clear()
        assert "[redacted]" in "".join(texts)  # the upstream's message was passed on, scrubbed
        for stream in (False, True):  # an unexpected exception quoting the keys: a bare 500
            raw = json.dumps({"model": "ponder/boom", "stream": stream,
                              "messages": [{"role": "user", "content": "boom"}]}).encode()
            r = post(live.url, raw, headers=auth)
            assert "internal server error" in r.text and "RuntimeError" not in r.text
            texts.append(r.text)
        r = httpx.get(live.url + "/v1/models", headers={"authorization": f"Bearer {SERVER_TOKEN[:-1]}"})
        assert r.status_code == 401
        texts.append(r.text)
    client.close()
    logs = all_logs.getvalue()
    assert "ponder/boom" in logs and "RuntimeError" in logs  # the failures were logged...
    assert not leaked(logs), "key fragment in the server log"  # ...without the keys
    assert not leaked("\n".join(texts)), "key fragment in a response"


@pytest.mark.slow
def test_ponder_serve_scrubs_its_log(upstream: FakeLLMServer, tmp_path: Path) -> None:
    """The real command: uvicorn's access log and ponder's warnings go through the secret filter."""
    port = free_port()
    (tmp_path / "ponder.toml").write_text(f"""
[providers.up]
type = "openai"
base_url = "{upstream.url}"
api_key_env = "UPSTREAM_KEY"
max_retries = 0

[models]
m = "up:m"

[cache]
enabled = false
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "SRV_TOKEN": SERVER_TOKEN, "UPSTREAM_KEY": UPSTREAM_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ponder.cli import main; main()", "serve", "--config", str(tmp_path / "ponder.toml"),
         "--api-key-env", "SRV_TOKEN", "--access-log", "--max-messages", "5", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    auth = {"authorization": f"Bearer {SERVER_TOKEN}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ponder serve did not start: " + proc.communicate()[1].decode()[-2000:])
            time.sleep(0.1)
        # a client that puts the token in the query string: the access log prints the path
        assert httpx.get(url + f"/v1/models?api_key={SERVER_TOKEN}").status_code == 401
        assert post(url, chat_body(5, "hi", model="m"), headers=auth).status_code == 200
        assert upstream.requests[-1]["headers"].get("authorization") == f"Bearer {UPSTREAM_KEY}"  # not vacuous
        r = post(url, chat_body(6, "hi", model="m"), headers=auth)  # --max-messages reached the app
        assert r.status_code == 400 and "at most 5" in r.json()["error"]["message"]
        upstream.queue(echoing_key(500))
        r = post(url, chat_body(1, "fail", model="m"), headers=auth)
        assert r.status_code == 502 and not leaked(r.text)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    log = (out + err).decode("utf-8", "replace")  # uvicorn's access log goes to stdout
    assert "GET /v1/models?api_key=" in log and "request for m failed" in log, log[-2000:]
    assert not leaked(log), f"key fragment in the log: {leaked(log)}"
