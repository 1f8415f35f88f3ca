"""Hardening: torn output lines, literal model names, config check, Ctrl-C, bare ``ponder``,
``--version``, plain numbers in messages, the budget error, and broken strategy imports."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

import ponder
from ponder import Client, Config, SingleModel, config_problems, load_config
from ponder._batch import read_results, run_batch
from ponder.cli import app
from ponder.cli._common import run_main
from tests.fakeserver import Action, FakeLLMServer

ROOT = Path(__file__).resolve().parents[2]
PONDER = [sys.executable, "-c", "from ponder.cli import main; main()"]


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``ponder ARGS`` in-process through the real entry point (run_main)."""
    monkeypatch.setattr(sys, "argv", ["ponder", *args])
    monkeypatch.setenv("COLUMNS", "200")
    rc = run_main(app)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _upstream_config(tmp_path: Path, url: str, **extra: str) -> Path:
    cfg = tmp_path / "ponder.toml"
    lines = ["[providers.up]", 'type = "openai"', f'base_url = "{url}"', 'api_key = "sk-QZXQZXQZXQZX9"', "max_retries = 0",
             '[prices."up:m"]', "input = 1.0", "output = 2.0", "[cache]", "enabled = false"]
    cfg.write_text("\n".join(lines) + "\n" + "".join(f"{v}\n" for v in extra.values()))
    return cfg


# --- 1. a torn last output line, cut inside a multi-byte character -------------------------------
def test_torn_multibyte_last_line_is_redone_and_nothing_else(tmp_path: Path, fake_server: FakeLLMServer) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"größe {i} 日本語"}, ensure_ascii=False) + "\n"
                           for i in range(6)), encoding="utf-8")
    cfg = Config.model_validate({"providers": {"up": {"type": "openai", "base_url": fake_server.url,
                                                      "api_key": "sk-QZXQZXQZXQZX9", "max_retries": 0}},
                                 "prices": {"up:m": {"input": 1.0, "output": 2.0}}})
    first = run_batch(inp, out, SingleModel("up:m"), Client(cfg, cache=False), concurrency=1)
    assert first.done == 6 and fake_server.count == 6
    raw = out.read_bytes()
    assert "日本語".encode() in raw  # written as UTF-8, not \\u escapes
    lines = raw.splitlines(keepends=True)
    last = lines[-1]
    torn_id = json.loads(last)["id"]
    cut = last.index("日".encode()) + 1  # inside the 3-byte character
    out.write_bytes(b"".join(lines[:-1]) + last[:cut])

    again = run_batch(inp, out, SingleModel("up:m"), Client(cfg, cache=False), concurrency=2)
    assert (again.skipped, again.done, again.failed) == (5, 1, 0)
    assert fake_server.count == 7  # only the torn row was asked again
    assert torn_id.removeprefix("r") in fake_server.requests[-1]["body"]["messages"][-1]["content"]
    text = out.read_bytes().decode("utf-8")  # the torn bytes are gone
    recs = [json.loads(x) for x in text.splitlines()]
    assert sorted(r["id"] for r in recs) == [f"r{i}" for i in range(6)]
    assert all(r["error"] is None and "日本語" in r["text"] for r in recs)


def test_input_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b'{"id": 1, "prompt": "ok"}\n{"id": 2, "prompt": "caf\xe9"}\n')
    with pytest.raises(ponder.DataError) as err:
        ponder._batch.read_rows(inp)
    assert err.value.row == 2 and "UTF-8" in str(err.value)


# --- 2. model names and table cells print literally ----------------------------------------------
def test_model_name_in_an_error_is_not_an_emoji(tmp_path: Path, monkeypatch, capsys) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "sk-QZXQZXQZXQZX9"\n'
                   "max_retries = 0\ntimeout_s = 5\n")
    rc, _, err = cli(monkeypatch, capsys, "ask", "x", "--model", "openai:fire", "-c", str(cfg))
    assert rc == 1
    assert "openai:fire" in err and "\N{FIRE}" not in err


def test_table_cells_print_markup_and_emoji_codes_literally(tmp_path: Path, monkeypatch, capsys) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[prices."x:[bold]y[/bold]"]\ninput = 1.0\noutput = 2.0\n'
                   '[prices."local:llama:smollm2"]\ninput = 1.0\noutput = 2.0\n'
                   '[models]\nhot = "openai:fire:1"\n')
    rc, out, _ = cli(monkeypatch, capsys, "models", "-c", str(cfg))
    assert rc == 0
    assert "x:[bold]y[/bold]" in out and "local:llama:smollm2" in out and "hot = openai:fire:1" in out
    assert "\N{LLAMA}" not in out and "\N{FIRE}" not in out


def test_eval_table_prints_model_names_literally(tmp_path: Path, monkeypatch, capsys) -> None:
    rows = []
    for q in range(8):
        for model, score, cost in (("[bold]cheap[/bold]", q % 2, 0.25), ("openai:fire:", 1.0, 2.0)):
            rows.append({"query_id": f"q{q}", "query": f"question {q}", "model": model, "score": score,
                         "cost_usd": cost, "split": "train" if q < 4 else "test"})
    data = tmp_path / "t[1].csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    rc, out, err = cli(monkeypatch, capsys, "eval", str(data), "--bootstrap", "0", "--report",
                       str(tmp_path / "r.html"), "-s", "cascade")
    assert rc == 0, err
    assert "[bold]cheap[/bold]" in out and "openai:fire:" in out and "t[1]" in out
    assert "\N{FIRE}" not in out


# --- 3. config check: every problem, schema and semantic, in one pass ------------------------------
def _problems(tmp_path: Path, text: str) -> dict[str, str]:
    p = tmp_path / "c.toml"
    p.write_text(text)
    problems = config_problems(p)
    assert all(pr.file == str(p) for pr in problems)
    return {str(pr.key): pr.reason for pr in problems}


@pytest.mark.parametrize("url", ["not a url", "ftp://example.com/v1", "http://", "localhost:8000/v1"])
def test_base_url_must_be_http(tmp_path: Path, url: str) -> None:
    got = _problems(tmp_path, f'[providers.vllm]\ntype = "openai"\nbase_url = "{url}"\n')
    assert "http://" in got["providers.vllm.base_url"]


def test_good_urls_pass(tmp_path: Path) -> None:
    text = ('[providers.vllm]\ntype = "openai"\nbase_url = "https://h.example:8443/v1"\n'
            '[cache]\nbackend = "redis"\nurl = "rediss://:pw@redis.example:6380/0"\n')
    assert _problems(tmp_path, text) == {}
    assert _problems(tmp_path, '[cache]\nbackend = "redis"\nurl = "unix:///run/redis.sock"\n') == {}


def test_redis_url_must_be_redis(tmp_path: Path) -> None:
    got = _problems(tmp_path, '[cache]\nbackend = "redis"\nurl = "http://127.0.0.1:6379/0"\n')
    assert "redis://" in got["cache.url"] and "http://127.0.0.1:6379/0" in got["cache.url"]


def test_backoff_bounds_in_order(tmp_path: Path) -> None:
    got = _problems(tmp_path, "[providers.openai]\nbackoff_initial_s = 10\nbackoff_max_s = 2\n")
    assert "larger than backoff_max_s" in got["providers.openai.backoff_initial_s"]
    got = _problems(tmp_path, "[providers.openai]\nbackoff_initial_s = 60\n")  # default max is 30
    assert "providers.openai.backoff_initial_s" in got


def test_alias_to_unknown_provider(tmp_path: Path) -> None:
    got = _problems(tmp_path, '[providers.vllm]\ntype = "openai"\n[models]\n'
                              'ok = "vllm:qwen"\nbuiltin = "openai:gpt-4o"\nbad = "nope:gpt"\n')
    assert set(got) == {"models.bad"} and "unknown provider 'nope'" in got["models.bad"]


def test_all_problems_at_once_schema_and_semantic(tmp_path: Path, monkeypatch, capsys) -> None:
    text = """
[providers.vllm]
type = "openai"
base_url = "not a url"
timeout_s = -1
backoff_initial_s = 5
backoff_max_s = 1

[cache]
backend = "redis"
url = "http://127.0.0.1:6379"

[models]
fast = "nope:m"

[strategies.cheap]
path = "missing.json"
"""
    got = _problems(tmp_path, text)
    assert set(got) == {"providers.vllm.base_url", "providers.vllm.timeout_s",
                        "providers.vllm.backoff_initial_s", "cache.url", "models.fast",
                        "strategies.cheap.path"}
    p = tmp_path / "c.toml"
    rc, _, err = cli(monkeypatch, capsys, "config", "check", str(p))
    assert rc == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 6 and all(f"{p}: " in ln for ln in lines)
    for key in got:
        assert any(f"{p}: {key}: " in ln for ln in lines), key
    with pytest.raises(ponder.ConfigError) as exc:  # at runtime: the file and the key
        load_config(p)
    assert exc.value.file == str(p) and exc.value.key in got and "5 more" in str(exc.value)


def test_base_url_flag_is_checked(monkeypatch, capsys) -> None:
    rc, _, err = cli(monkeypatch, capsys, "ask", "x", "-m", "openai:m", "--base-url", "ftp://x/v1")
    assert rc == 1 and "--base-url" in err and "ftp://x/v1" in err


# --- 4. Ctrl-C on ponder run -----------------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_says_what_was_written_and_how_to_resume(tmp_path: Path, fake_server: FakeLLMServer) -> None:
    n = 40
    cfg = _upstream_config(tmp_path, fake_server.url)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"question {i}"}) + "\n" for i in range(n)))
    fake_server.default = Action(kind="ok", delay_s=0.1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["run", str(inp), "--output", str(out), "-n", "2", "--model", "up:m", "--config", str(cfg),
            "--no-progress"]
    # A job started with `&` from a script inherits SIGINT ignored (so would this child, and the
    # Ctrl-C would be lost); a terminal's Ctrl-C reaches a process with the default disposition.
    proc = subprocess.Popen([*PONDER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 6):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    written = len(read_results(out))
    assert 6 <= written < n
    assert f"{written} of {n} rows are written to {out}" in err, err
    (resume,) = [ln.removeprefix("resume with: ") for ln in err.splitlines() if ln.startswith("resume with: ")]
    words = shlex.split(resume)
    assert words[:2] == ["ponder", "run"] and str(inp) in words and "--no-progress" in words
    fake_server.default = Action(kind="ok")
    time.sleep(0.3)  # let the server finish recording what reached it before the interrupt
    paid = fake_server.count
    done = subprocess.run([*PONDER, *words[1:]], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{n - written} answered, 0 failed, {written} already done" in done.stderr
    assert fake_server.count - paid == n - written
    assert sorted(read_results(out)) == sorted(f"r{i}" for i in range(n))


# --- 5. bare `ponder` and --version -------------------------------------------------------------
def test_bare_ponder_prints_help_not_an_error(monkeypatch, capsys) -> None:
    rc, out, err = cli(monkeypatch, capsys)
    assert rc in (0, 2)
    assert "Usage" in out + err and "run" in out + err
    assert "error" not in (out + err).lower()


def test_missing_argument_is_a_usage_error(monkeypatch, capsys) -> None:
    rc, out, err = cli(monkeypatch, capsys, "run")
    assert rc == 2
    assert "Usage" in err and "INPUT.jsonl" in err and "MissingParameter" not in err


def test_version(monkeypatch, capsys) -> None:
    from importlib.metadata import version

    rc, out, _ = cli(monkeypatch, capsys, "--version")
    assert rc == 0 and out.strip() == f"ponder {version('ponder')}"
    assert out.strip().split()[1] == ponder.__version__


# --- 6. numbers in messages are plain Python numbers ----------------------------------------------
def test_negative_cost_message_shows_a_plain_number(tmp_path: Path) -> None:
    from ponder.evaluation import read_outcomes

    p = tmp_path / "t.csv"
    pd.DataFrame([{"query_id": "q", "query": "x", "model": "a", "score": 1.0, "cost_usd": -0.001}]).to_csv(p, index=False)
    with pytest.raises(ponder.DataError) as err:
        read_outcomes(p)
    assert "got -0.001" in str(err.value) and "np." not in str(err.value)


# --- 7. a budget that stops a run is an error the user sees ----------------------------------------
def test_budget_stop_raises_budget_exceeded(tmp_path: Path, fake_server: FakeLLMServer, monkeypatch, capsys) -> None:
    cfg = _upstream_config(tmp_path, fake_server.url)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"question {i}"}) + "\n" for i in range(20)))
    rc, _, err = cli(monkeypatch, capsys, "run", str(inp), "-o", str(out), "-n", "1", "-m", "up:m",
                     "-c", str(cfg), "--max-cost", "0.00002", "--no-progress")
    assert rc == 1
    assert "error: budget of $2e-05 reached with" in err and "rows left" in err and "--max-cost" in err
    assert 0 < len(read_results(out)) < 20


# --- 8. a broken core strategy module raises; a missing optional extra warns ----------------------
def test_broken_core_strategy_module_raises(monkeypatch) -> None:
    from ponder.evaluation import registered_strategies

    monkeypatch.setitem(sys.modules, "ponder.routers", None)  # `import ponder.routers` now fails
    with pytest.raises(ImportError, match="ponder.routers"):
        registered_strategies()


def test_missing_optional_extra_is_skipped_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    from ponder.evaluation import _strategy

    (tmp_path / "needs_torch_plugin.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_strategy, "_PLUGIN_MODULES", ("needs_torch_plugin",))
    with pytest.warns(UserWarning, match="torch"):
        _strategy.registered_strategies()
    (tmp_path / "broken_plugin.py").write_text("import no_such_module_xyz\n")
    monkeypatch.setattr(_strategy, "_PLUGIN_MODULES", ("broken_plugin",))
    with warnings.catch_warnings(), pytest.raises(ImportError, match="no_such_module_xyz"):
        warnings.simplefilter("error")
        _strategy.registered_strategies()
