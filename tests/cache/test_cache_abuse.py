"""The completion cache under abuse: a corrupt or unusable cache directory, a backend that fails and
comes back, the async path, and a disabled cache. ponder answers anyway, says what is wrong once per
change of state, and ``ponder cache clear`` repairs what it can."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import ponder
from ponder import CachedProvider, ChatRequest, Completion, DiskCacheBackend, Usage


def ponder_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ponder", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def ask(fake_server, cache_dir: Path, prompt: str = "hello") -> subprocess.CompletedProcess:
    return ponder_cli("ask", prompt, "--model", "openai:gpt-4o-mini", "--base-url", fake_server.url, "--json",
                      env={"PONDER_CACHE_DIR": str(cache_dir)})


def cache_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "cache" in ln]


def corrupt(db: Path, how: str) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2] if how == "truncated" else b"not a database " * 200)


class EchoProvider:
    """An in-process provider with a price, counting the calls that reach it."""

    name = "echo"
    endpoint = "mem://"

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, request: ChatRequest, model: str) -> Completion:
        self.calls += 1
        return Completion(text=f"echo {request.messages[-1].content}", model=model, provider=self.name,
                          usage=Usage(input_tokens=3, output_tokens=2), cost_usd=0.5)

    async def acomplete(self, request: ChatRequest, model: str) -> Completion:
        return self.complete(request, model)

    def stream(self, request: ChatRequest, model: str) -> Iterator[str | Completion]:
        c = self.complete(request, model)
        yield c.text
        yield c

    async def astream(self, request: ChatRequest, model: str) -> AsyncIterator[str | Completion]:
        c = self.complete(request, model)
        yield c.text
        yield c

    def close(self) -> None:
        pass


# --- 1. a corrupt or unusable cache does not stop ponder -----------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_ask_answers_over_a_corrupt_cache_with_one_warning(fake_server, tmp_path: Path, how: str) -> None:
    cache_dir = tmp_path / "cache"
    assert ask(fake_server, cache_dir, "fill").returncode == 0
    corrupt(cache_dir / "cache.db", how)
    r = ask(fake_server, cache_dir)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"] == "echo: hello"
    assert "Traceback" not in r.stderr
    lines = cache_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert str(cache_dir / "cache.db") in lines[0] and "ponder cache clear" in lines[0]
    assert "continuing without" in lines[0]


@pytest.mark.slow
def test_a_corrupt_stats_file_is_named_too(fake_server, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    assert ask(fake_server, cache_dir, "fill").returncode == 0
    corrupt(cache_dir / "stats" / "cache.db", "garbage")
    r = ask(fake_server, cache_dir)
    assert r.returncode == 0 and json.loads(r.stdout)["text"] == "echo: hello"
    lines = cache_lines(r.stderr)
    assert len(lines) == 1 and str(cache_dir / "stats" / "cache.db") in lines[0], r.stderr


@pytest.mark.slow
def test_run_answers_over_a_corrupt_cache_with_one_warning(fake_server, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    assert ask(fake_server, cache_dir, "fill").returncode == 0
    corrupt(cache_dir / "cache.db", "truncated")
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"p{i}", "temperature": 0}) + "\n"
                           for i in range(5)))
    r = ponder_cli("run", str(inp), "--output", str(out), "--model", "openai:gpt-4o-mini", "--base-url",
                   fake_server.url, "--no-progress", env={"PONDER_CACHE_DIR": str(cache_dir)})
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 5
    lines = [ln for ln in r.stderr.splitlines() if "cache unavailable" in ln]
    assert len(lines) == 1 and str(cache_dir / "cache.db") in lines[0], r.stderr


def test_the_server_starts_and_answers_over_a_corrupt_cache(fake_server, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from fastapi.testclient import TestClient

    from ponder.server import create_app

    path = tmp_path / "cache"
    DiskCacheBackend(path).set("k", b"v")
    corrupt(path / "cache.db", "garbage")
    cfg = ponder.Config.model_validate({
        "providers": {"up": {"type": "openai", "base_url": fake_server.url, "max_retries": 0}},
        "cache": {"enabled": True, "path": str(path)}})
    caplog.set_level(logging.WARNING, logger="ponder.cache")
    with TestClient(create_app(cfg, {}, models=["up:m"])) as http:
        for i in range(3):
            r = http.post("/v1/chat/completions", json={"model": "up:m", "temperature": 0, "messages": [
                {"role": "user", "content": f"q{i}"}]})
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == f"echo: q{i}"
    warnings = [r.getMessage() for r in caplog.records if r.name == "ponder.cache"]
    assert len(warnings) == 1 and str(path / "cache.db") in warnings[0]


@pytest.mark.slow
def test_cache_clear_removes_a_corrupt_cache_and_ask_starts_afresh(fake_server, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    assert ask(fake_server, cache_dir, "fill").returncode == 0
    corrupt(cache_dir / "cache.db", "truncated")
    keep = cache_dir / "notes.txt"  # not diskcache's: clear leaves it alone
    keep.write_text("mine")
    cleared = ponder_cli("cache", "clear", env={"PONDER_CACHE_DIR": str(cache_dir)})
    assert cleared.returncode == 0, cleared.stderr
    assert "removed" in cleared.stdout and str(cache_dir / "cache.db") in cleared.stdout
    assert keep.read_text() == "mine"
    first, second = ask(fake_server, cache_dir, "again"), ask(fake_server, cache_dir, "again")
    assert first.returncode == second.returncode == 0
    assert json.loads(first.stdout)["cached"] is False and json.loads(second.stdout)["cached"] is True
    assert cache_lines(first.stderr + second.stderr) == []


@pytest.mark.slow
def test_cache_stats_reports_a_corrupt_cache(fake_server, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    assert ask(fake_server, cache_dir, "fill").returncode == 0
    corrupt(cache_dir / "cache.db", "garbage")
    r = ponder_cli("cache", "stats", env={"PONDER_CACHE_DIR": str(cache_dir)})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert str(cache_dir / "cache.db") in lines[0] and "ponder cache clear" in lines[0]
    assert "DatabaseError" not in lines[0]


@pytest.mark.slow
def test_a_cache_path_under_a_file_degrades_to_no_cache(fake_server, tmp_path: Path) -> None:
    """Fails for root too (unlike chmod): the cache folder cannot be created at all."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = ask(fake_server, blocker / "cache")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"] == "echo: hello"
    lines = cache_lines(r.stderr)
    assert len(lines) == 1 and str(blocker / "cache") in lines[0], r.stderr
    assert "PONDER_CACHE_DIR" in lines[0]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes through chmod; test_a_cache_path_under_a_file covers the path")
def test_a_read_only_cache_degrades_to_no_cache(fake_server, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    assert ask(fake_server, cache_dir, "fill").returncode == 0
    for p in [*cache_dir.rglob("*"), cache_dir]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        r = ask(fake_server, cache_dir)
    finally:
        for p in [cache_dir, *cache_dir.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"] == "echo: hello"
    lines = cache_lines(r.stderr)
    assert len(lines) == 1 and str(cache_dir) in lines[0], r.stderr


def test_a_read_only_database_is_named_with_its_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """What sqlite says about a read-only cache, whoever runs the test (chmod does not bind root)."""
    import diskcache

    def read_only(*args: object, **kw: object) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(diskcache, "Cache", read_only)
    p = CachedProvider(EchoProvider(), DiskCacheBackend(tmp_path / "c"))
    caplog.set_level(logging.WARNING, logger="ponder.cache")
    assert [p.complete(ChatRequest.of("q", temperature=0), "m").text for _ in range(2)] == ["echo q"] * 2
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning == (f"cache unavailable at {tmp_path / 'c' / 'cache.db'} (attempt to write a readonly database); "
                       f"continuing without it; make {tmp_path / 'c'} writable, or set [cache] path or "
                       "$PONDER_CACHE_DIR to a writable folder")


def test_cache_clear_on_a_cache_path_under_a_file_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = ponder_cli("cache", "clear", env={"PONDER_CACHE_DIR": str(blocker / "cache")})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    [line] = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert str(blocker / "cache") in line and "PONDER_CACHE_DIR" in line
    assert blocker.read_text() == "x"


def test_library_degrades_and_a_cleared_cache_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """In one process: corrupt -> one warning -> cleared by someone else -> used again, with a note."""
    path = tmp_path / "c"
    DiskCacheBackend(path).set("k", b"v")
    corrupt(path / "cache.db", "garbage")
    backend = DiskCacheBackend(path, retry_s=0.0)
    p = CachedProvider(EchoProvider(), backend)
    caplog.set_level(logging.WARNING, logger="ponder.cache")
    assert [p.complete(ChatRequest.of("q", temperature=0), "m").cached for _ in range(3)] == [False] * 3
    assert len(caplog.records) == 1 and str(path / "cache.db") in caplog.records[0].getMessage()
    removed = DiskCacheBackend(path).reset()
    assert path / "cache.db" in removed
    assert [p.complete(ChatRequest.of("q", temperature=0), "m").cached for _ in range(2)] == [False, True]
    assert [r.getMessage() for r in caplog.records][1:] == [f"cache at {path / 'cache.db'} recovered; using it again"]


# --- 2. the async path keeps cache I/O off the event loop ----------------------------------------
class ThreadRecordingBackend(DiskCacheBackend):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.threads: set[int] = set()

    def get(self, key: str) -> bytes | None:
        self.threads.add(threading.get_ident())
        return super().get(key)

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self.threads.add(threading.get_ident())
        super().set(key, value, ttl_s)

    def incr(self, counter: str, amount: int = 1) -> None:
        self.threads.add(threading.get_ident())
        super().incr(counter, amount)


def test_async_calls_never_touch_the_disk_cache_on_the_event_loop(tmp_path: Path) -> None:
    backend = ThreadRecordingBackend(tmp_path / "c")
    inner = EchoProvider()
    p = CachedProvider(inner, backend)

    async def main() -> tuple[int, list[bool]]:
        cached = [(await p.acomplete(ChatRequest.of("q", temperature=0), "m")).cached for _ in range(2)]
        for _ in range(2):
            last = [item async for item in p.astream(ChatRequest.of("s", temperature=0), "m")][-1]
            assert isinstance(last, Completion)
            cached.append(last.cached)
        return threading.get_ident(), cached

    loop_thread, cached = asyncio.run(main())
    assert cached == [False, True, False, True] and inner.calls == 2
    assert backend.threads and loop_thread not in backend.threads


def test_async_path_uses_a_backends_own_async_methods(tmp_path: Path) -> None:
    class AsyncOnly(DiskCacheBackend):
        def get(self, key: str) -> bytes | None:
            raise AssertionError("sync get on the async path")

        def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
            raise AssertionError("sync set on the async path")

        def incr(self, counter: str, amount: int = 1) -> None:
            raise AssertionError("sync incr on the async path")

        async def aget(self, key: str) -> bytes | None:
            return await asyncio.to_thread(DiskCacheBackend.get, self, key)

        async def aset(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
            await asyncio.to_thread(DiskCacheBackend.set, self, key, value, ttl_s)

        async def aincr(self, counter: str, amount: int = 1) -> None:
            await asyncio.to_thread(DiskCacheBackend.incr, self, counter, amount)

    p = CachedProvider(EchoProvider(), AsyncOnly(tmp_path / "c"))

    async def main() -> list[bool]:
        return [(await p.acomplete(ChatRequest.of("q", temperature=0), "m")).cached for _ in range(2)]

    assert asyncio.run(main()) == [False, True]


# --- 3. one warning per change of state, not per process -----------------------------------------
class Switchable:
    """A structural backend (no async methods of its own) whose outage is switched by the test."""

    location = "mem://switchable"

    def __init__(self) -> None:
        self.down = False
        self.data: dict[str, bytes] = {}
        self.stats: dict[str, int] = {}

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("down")

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.data.get(key)

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._check()
        self.data[key] = value

    def incr(self, counter: str, amount: int = 1) -> None:
        self._check()
        self.stats[counter] = self.stats.get(counter, 0) + amount

    def counters(self) -> dict[str, int]:
        return dict(self.stats)

    def clear(self) -> int:
        n = len(self.data)
        self.data.clear()
        return n

    def close(self) -> None:
        pass


def _outages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return ["down" if "cache unavailable" in r.getMessage() else "up" if "recovered" in r.getMessage()
            else r.getMessage() for r in caplog.records if r.name == "ponder.cache"]


@pytest.mark.parametrize("use_async", [False, True])
def test_every_outage_and_every_recovery_is_reported_once(caplog: pytest.LogCaptureFixture,
                                                          use_async: bool) -> None:
    backend = Switchable()
    p = CachedProvider(EchoProvider(), backend)  # type: ignore[arg-type]  # structural, no async methods
    caplog.set_level(logging.WARNING, logger="ponder.cache")

    def ask_n(n: int) -> list[bool]:
        if use_async:
            async def main() -> list[bool]:
                return [(await p.acomplete(ChatRequest.of("q", temperature=0), "m")).cached for _ in range(n)]
            return asyncio.run(main())
        return [p.complete(ChatRequest.of("q", temperature=0), "m").cached for _ in range(n)]

    assert ask_n(2) == [False, True]
    for _ in range(2):
        backend.down = True
        assert ask_n(3) == [False] * 3
        backend.down = False
        assert ask_n(2) == [True, True]
    assert _outages(caplog) == ["down", "up", "down", "up"]
    down = next(r.getMessage() for r in caplog.records if "unavailable" in r.getMessage())
    assert "mem://switchable" in down and "continuing without" in down


def test_providers_of_one_client_share_one_warning_per_transition(fake_server,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    cfg = ponder.Config.model_validate({"providers": {
        name: {"type": "openai", "base_url": fake_server.url, "max_retries": 0} for name in ("a", "b")}})
    backend = Switchable()
    caplog.set_level(logging.WARNING, logger="ponder.cache")
    with ponder.Client(cfg, cache=backend) as client:  # type: ignore[arg-type]
        backend.down = True
        for name in ("a", "b", "a", "b"):
            assert client.complete("hi", model=f"{name}:m", temperature=0).text == "echo: hi"
        backend.down = False
        for name in ("a", "b"):
            client.complete("hi", model=f"{name}:m", temperature=0)
    assert _outages(caplog) == ["down", "up"]


# --- 4. a disabled cache ---------------------------------------------------------------------------
def test_stats_of_a_disabled_cache_raise_a_named_error() -> None:
    from ponder import CacheDisabled

    with pytest.raises(CacheDisabled, match="disabled") as info:
        ponder.Client(cache=False).cache_stats()
    assert isinstance(info.value, ponder.PonderError)


def test_cache_stats_cli_says_the_cache_is_disabled(tmp_path: Path) -> None:
    cfg = tmp_path / "ponder.toml"
    cfg.write_text("[cache]\nenabled = false\n")
    r = ponder_cli("cache", "stats", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "disabled" in r.stdout and str(cfg) in r.stdout
    j = ponder_cli("cache", "stats", "--json", "--config", str(cfg))
    assert j.returncode == 0 and json.loads(j.stdout)["enabled"] is False
