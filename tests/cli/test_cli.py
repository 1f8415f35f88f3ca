"""``ponder ask`` and friends, run as a user runs them: a subprocess against a real HTTP server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakeserver import Action


def ponder(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ponder", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=120)


@pytest.mark.slow
def test_ask_json_then_cache_hit_without_http(fake_server, tmp_path):
    env = {"PONDER_CACHE_DIR": str(tmp_path / "cache")}
    args = ["ask", "hello", "--model", "openai:gpt-4o-mini", "--base-url", fake_server.url, "--json"]
    first = ponder(*args, env=env)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["text"] == "echo: hello" and out["model"] == "openai:gpt-4o-mini"
    assert out["cached"] is False and out["cost_usd"] > 0
    assert out["usage"] == {"input_tokens": 1, "output_tokens": 2, "cached_input_tokens": 0,
                            "reasoning_tokens": 0}
    assert fake_server.count == 1
    second = json.loads(ponder(*args, env=env).stdout)
    assert second["cached"] is True and second["cost_usd"] == 0 and second["saved_usd"] == out["cost_usd"]
    assert second["text"] == out["text"]
    assert fake_server.count == 1  # no HTTP request reached the server
    stats = json.loads(ponder("cache", "stats", "--json", env=env).stdout)
    assert (stats["hits"], stats["misses"]) == (1, 1) and abs(stats["saved_usd"] - out["cost_usd"]) < 1e-12
    cleared = ponder("cache", "clear", env=env)
    assert cleared.returncode == 0 and "removed 1" in cleared.stdout


@pytest.mark.slow
def test_plain_output_shows_answer_and_cost(fake_server):
    r = ponder("ask", "hi there", "--model", "openai:gpt-4o", "--base-url", fake_server.url)
    assert r.returncode == 0
    assert r.stdout.strip() == "echo: hi there"
    assert "cost $" in r.stderr and "openai:gpt-4o" in r.stderr


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_unknown_provider():
    line = _one_error_line(ponder("ask", "hi", "--model", "nosuch:model"))
    assert "unknown provider 'nosuch'" in line


@pytest.mark.slow
def test_wrong_key_is_one_line_without_the_key(fake_server):
    fake_server.queue(Action(kind="status", status=401, body={"error": {"message": "Incorrect API key provided: sk-wrong-123456789"}}))
    r = ponder("ask", "hi", "--model", "openai:gpt-4o-mini", "--base-url", fake_server.url,
               env={"OPENAI_API_KEY": "sk-wrong-123456789"})
    line = _one_error_line(r)
    assert "authentication failed" in line and "sk-wrong" not in r.stderr + r.stdout


@pytest.mark.slow
def test_unreachable_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg_env = {"PONDER_CONFIG": ""}
    r = ponder("ask", "hi", "--model", "openai:m", "--base-url", f"http://127.0.0.1:{port}/v1", env=cfg_env)
    assert "cannot connect" in _one_error_line(r)


def test_malformed_config(tmp_path):
    cfg = tmp_path / "ponder.toml"
    cfg.write_text("[cache]\nsize_limit_mb = 'big'\n")
    line = _one_error_line(ponder("ask", "hi", "--model", "openai:m", "--config", str(cfg)))
    assert str(cfg) in line and "cache.size_limit_mb" in line
    check = ponder("config", "check", str(cfg))
    assert check.returncode == 1 and "cache.size_limit_mb" in check.stderr


def test_debug_shows_the_traceback():
    r = ponder("ask", "hi", "--model", "nosuch:model", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_models_lists_prices():
    r = ponder("models", "--json")
    data = json.loads(r.stdout)
    names = {m["model"] for m in data["models"]}
    assert {"openai:gpt-4o-mini", "anthropic:claude-3-5-haiku"} <= names and data["as_of"]


def test_models_table_keeps_every_name_whole_at_80_columns(tmp_path):
    """At 80 columns no name is cut to ``openai:gpt-4…``: a long one folds over lines, and the
    name column's fragments, joined, give every name in order; the table fits the terminal."""
    cfg = tmp_path / "ponder.toml"
    cfg.write_text('[prices."openrouter:meta-llama/llama-3.1-405b-instruct-turbo-preview-2025"]\n'
                   "input = 3.5\noutput = 3.5\n", encoding="utf-8")
    env = {"COLUMNS": "80", "PONDER_CONFIG": str(cfg)}
    names = [m["model"] for m in json.loads(ponder("models", "--json", env=env).stdout)["models"]]
    r = ponder("models", env=env)
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout and max(len(line.rstrip()) for line in r.stdout.splitlines()) <= 80
    lines = r.stdout.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("model "))
    fragments = [line.split()[0] for line in lines[top + 2:] if line[:1].strip()]
    assert "".join(fragments) == "".join(names)
    assert any(len(n) > 40 for n in names)  # that one had to fold
