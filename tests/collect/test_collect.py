"""``ponder collect``: prompts x models into an ungraded outcome table, through the official SDK
against the fake server (real HTTP): exact costs, resume without paying twice, samples with
``n``, logprob statistics, estimates, budgets, bad rows, file formats, interrupts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import ponder
from ponder import Client, DataError, PriceTable, Usage
from ponder._config import Config, ProviderSettings
from ponder.evaluation import OutcomeTable
from tests.fakeserver import Action

MINI, BIG = "openai:gpt-4o-mini", "openai:gpt-4o"
PROMPTS = [
    {"id": "q1", "prompt": "hello world", "reference": "hi", "task": "chat"},
    {"id": "q2", "messages": [{"role": "system", "content": "be brief"},
                              {"role": "user", "content": "one two three"}], "task": "math"},
]


def ponder_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ponder", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def write_prompts(path: Path, rows: list[dict] = PROMPTS) -> Path:
    fmt = path.suffix
    if fmt == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        df = pd.DataFrame([{**r, "messages": json.dumps(r["messages"]) if "messages" in r else ""}
                           for r in rows])
        df.to_csv(path, index=False) if fmt == ".csv" else df.to_parquet(path)
    return path


def cost(model: str, usage: Usage) -> float:
    provider, _, name = model.partition(":")
    price = PriceTable.default().lookup(provider, name)
    assert price is not None
    return price.cost(usage)


@pytest.mark.slow
def test_cli_collects_exact_costs_then_rerun_sends_nothing(fake_server, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "outcomes.parquet"
    args = ["collect", str(prompts), "--model", MINI, "--model", BIG, "--output", str(out),
            "--base-url", fake_server.url, "--no-progress"]
    first = ponder_cli(*args)
    assert first.returncode == 0, first.stderr
    assert fake_server.count == 4 and "4 calls answered" in first.stderr
    df = pd.read_parquet(out)
    assert len(df) == 4 and set(zip(df.query_id, df.model, strict=True)) == {(q, m) for q in ("q1", "q2") for m in (MINI, BIG)}
    assert df["score"].isna().all() and df["error"].isna().all()
    row = df[(df.query_id == "q2") & (df.model == BIG)].iloc[0]
    assert row.response == "echo: one two three" and row.task == "math"
    assert json.loads(row.query) == PROMPTS[1]["messages"]  # several messages: the JSON list
    assert (row.input_tokens, row.output_tokens) == (5, 4)
    assert row.cost_usd == pytest.approx(cost(BIG, Usage(input_tokens=5, output_tokens=4)), rel=1e-12)
    q1 = df[(df.query_id == "q1") & (df.model == MINI)].iloc[0]
    assert (q1.query, q1.reference, json.loads(q1.samples)) == ("hello world", "hi", ["echo: hello world"])
    assert not (tmp_path / "outcomes.parquet.progress.jsonl").exists()  # the table holds everything

    again = ponder_cli(*args)
    assert again.returncode == 0, again.stderr
    assert fake_server.count == 4  # nothing reached the server
    assert "0 calls answered" in again.stderr and "4 answers already collected" in again.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(out), df)

    # an ungraded table says so instead of failing on its empty scores
    with pytest.raises(DataError, match="not graded: run `ponder grade`"):
        OutcomeTable.read(out)
    assert len(OutcomeTable.read(out, graded=False)) == 4
    ev = ponder_cli("eval", str(out))
    assert ev.returncode != 0 and "not graded" in ev.stderr and "Traceback" not in ev.stderr


def test_samples_use_n_and_logprobs_are_summarised(fake_server, tmp_path):
    out = tmp_path / "o.jsonl"
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        table = ponder.collect(PROMPTS, [MINI], client=client, output=out, samples=3, temperature=0.7,
                               logprobs=True)
    assert fake_server.count == 2  # one request per (prompt, model): the input is paid once
    bodies = [r["body"] for r in fake_server.requests]
    assert all(b["n"] == 3 and b["logprobs"] is True and b["temperature"] == 0.7 for b in bodies)
    df = table.df.set_index("query_id")
    assert json.loads(df.loc["q1", "samples"]) == ["echo: hello world", "echo: hello world #1",
                                                   "echo: hello world #2"]
    assert df.loc["q1", "response"] == "echo: hello world"
    # usage covers every choice: 3 + 4 + 4 output tokens, 2 input tokens once
    assert df.loc["q1", "output_tokens"] == 11 and df.loc["q1", "input_tokens"] == 2
    assert df.loc["q1", "cost_usd"] == pytest.approx(cost(MINI, Usage(input_tokens=2, output_tokens=11)))
    # logprobs -0.1, -0.2, -0.3 for the three words of the first answer
    assert (df.loc["q1", "logprob_mean"], df.loc["q1", "logprob_min"], df.loc["q1", "logprob_tokens"]) == (
        pytest.approx(-0.2), pytest.approx(-0.3), 3)
    # sampled answers are not cached by default; the output file is the resume record
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        again = ponder.collect(PROMPTS, [MINI], client=client, output=out, samples=3, temperature=0.7,
                               logprobs=True)
    assert fake_server.count == 2 and len(again) == 2
    # more samples later: only the missing ones are asked for
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        more = ponder.collect(PROMPTS, [MINI], client=client, output=out, samples=4, temperature=0.7)
    assert fake_server.count == 4 and all("n" not in r["body"] for r in fake_server.requests[2:])
    assert [len(json.loads(s)) for s in more.df["samples"]] == [4, 4]


@pytest.mark.slow
def test_providers_without_n_get_one_call_per_sample(fake_server, tmp_path):
    cfg = Config(providers={"anthropic": ProviderSettings(type="anthropic", base_url=fake_server.base,
                                                          api_key="sk-test-key-0123456789")})
    with Client(cfg, cache=False) as client:
        table = ponder.collect(PROMPTS[:1], ["anthropic:claude-3-5-haiku-latest"], client=client,
                               samples=2, temperature=1.0)
    assert fake_server.count == 2 and all("n" not in r["body"] for r in fake_server.requests)
    row = table.df.iloc[0]
    assert json.loads(row.samples) == ["echo: hello world"] * 2
    assert row.input_tokens == 4  # each call paid its input


@pytest.mark.slow
def test_estimate_calls_nothing(fake_server, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl")
    base = ["collect", str(prompts), "--model", MINI, "--model", BIG, "--output", str(tmp_path / "o.csv"),
            "--base-url", fake_server.url, "--estimate"]
    r = ponder_cli(*base)
    assert r.returncode == 0, r.stderr
    assert fake_server.count == 0 and not (tmp_path / "o.csv").exists()
    assert MINI in r.stdout and BIG in r.stdout and "256 tokens per answer (a fixed default)" in r.stdout
    assert "output length is a guess" in r.stdout
    r = ponder_cli(*base, "--max-tokens", "40")
    assert "40 tokens per answer (--max-tokens)" in r.stdout and fake_server.count == 0
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        est = ponder.estimate_collect(prompts, [MINI], client=client, max_tokens=40)
    assert est[0].calls == 2 and est[0].output_tokens == 80
    assert est[0].cost_usd == pytest.approx(cost(MINI, Usage(input_tokens=est[0].input_tokens, output_tokens=80)))


@pytest.mark.slow
def test_max_cost_stops_then_resumes(fake_server, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "o.jsonl"
    args = ["collect", str(prompts), "--model", BIG, "--output", str(out), "--base-url", fake_server.url,
            "--concurrency", "1", "--no-progress"]
    r = ponder_cli(*args, "--max-cost", "0.000001")
    assert r.returncode == 1 and "budget of $1e-06 reached with 1 calls left" in r.stderr
    assert fake_server.count == 1
    assert [json.loads(line)["query_id"] for line in out.read_text().splitlines()] == ["q1"]
    r = ponder_cli(*args)
    assert r.returncode == 0, r.stderr
    assert fake_server.count == 2 and len(out.read_text().splitlines()) == 2


def test_failed_calls_are_recorded_and_retried(fake_server, tmp_path):
    out = tmp_path / "o.csv"
    fake_server.queue(Action(kind="status", status=400))
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        table = ponder.collect(PROMPTS, [MINI], client=client, output=out, concurrency=1)
    errors = table.df.set_index("query_id")["error"]
    assert isinstance(errors["q1"], str) and "400" in errors["q1"] and pd.isna(errors["q2"])
    assert (tmp_path / "o.csv.progress.jsonl").exists()
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        table = ponder.collect(PROMPTS, [MINI], client=client, output=out)
    assert fake_server.count == 3  # only the failed one again
    assert table.df["error"].isna().all() and not (tmp_path / "o.csv.progress.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("bad", [
    pytest.param({"id": 5}, id="no-fields"),
    pytest.param({"id": "q2-0", "query_id": "q2", "model": MINI, "response": "echo: one two three",
                  "error": None}, id="no-sample"),
    pytest.param({"id": "q2-0", "query_id": "q2", "model": MINI, "sample": "zero", "response": "x",
                  "error": None}, id="sample-not-int"),
    pytest.param({"id": "q2-0", "query_id": "q2", "model": MINI, "sample": 0, "response": None,
                  "error": None}, id="neither-response-nor-error"),
    pytest.param({"id": "q2-0", "query_id": "q2", "model": MINI, "sample": 0, "response": "",
                  "tool_calls": "get_weather", "error": None}, id="tool-calls-not-a-list"),
    pytest.param('{"id": "[\\"q2\\", \\"openai:gpt-4o-mi', id="torn-by-a-kill"),
])
def test_bad_progress_record_is_dropped_with_a_warning_and_asked_again(fake_server, tmp_path, caplog, bad):
    out = tmp_path / "o.jsonl"
    progress = tmp_path / "o.jsonl.progress.jsonl"
    good = {"id": json.dumps(["q1", MINI, 0]), "query_id": "q1", "model": MINI, "sample": 0,
            "response": "kept from the progress file", "cost_usd": 0.001, "input_tokens": 2,
            "output_tokens": 3, "latency_s": 0.1, "error": None}
    progress.write_text(json.dumps(good) + "\n" + (bad if isinstance(bad, str) else json.dumps(bad)) + "\n")
    with caplog.at_level("WARNING", logger="ponder.collect"), \
            Client(Config(), base_urls={"openai": fake_server.url}) as client:
        table = ponder.collect(PROMPTS, [MINI], client=client, output=out)
    assert fake_server.count == 1  # q2 again, q1 not
    assert fake_server.requests[0]["body"]["messages"][-1]["content"] == "one two three"
    df = table.df.set_index("query_id")
    assert df.loc["q1", "response"] == "kept from the progress file"
    assert df.loc["q2", "response"] == "echo: one two three" and df["error"].isna().all()
    warned = [r.getMessage() for r in caplog.records if r.name == "ponder.collect"]
    assert len(warned) == 1 and f"{progress}, line 2: progress record dropped" in warned[0]


@pytest.mark.slow
@pytest.mark.parametrize(("rows", "where"), [
    ([{"id": "a", "prompt": "x"}, {"id": "b"}], "row 2, column 'prompt': needs a 'prompt' or 'messages'"),
    ([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], "row 2, column 'id': duplicate id 'a'"),
    ([{"prompt": "x"}], "row 1, column 'id': is missing"),
    ([{"id": "a", "messages": [{"role": "wizard", "content": "x"}]}], "row 1, column 'messages'"),
])
def test_bad_rows_are_named(fake_server, tmp_path, rows, where):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = ponder_cli("collect", str(path), "--model", MINI, "--output", str(tmp_path / "o.jsonl"),
                   "--base-url", fake_server.url)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{path}, {where}" in r.stderr and fake_server.count == 0


def test_bad_csv_messages_cell_is_named(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('id,messages\na,"[{""role"": ""user"", ""content"": ""hi""}]"\nb,[not json\n')
    with pytest.raises(DataError, match=r"p.csv, row 2, column 'messages': not a JSON list"):
        ponder.collect(path, [MINI], client=Client(Config(), cache=False))


@pytest.mark.slow
@pytest.mark.parametrize(("src", "dst"), [(".jsonl", ".csv"), (".csv", ".jsonl"), (".parquet", ".parquet")])
def test_input_and_output_formats(fake_server, tmp_path, src, dst):
    prompts = write_prompts(tmp_path / f"p{src}")
    out = tmp_path / f"o{dst}"
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        ponder.collect(prompts, [MINI], client=client, output=out)
    table = OutcomeTable.read(out, graded=False)
    assert sorted(table.query_ids) == ["q1", "q2"] and table.df["score"].isna().all()
    assert set(table.df["response"]) == {"echo: hello world", "echo: one two three"}
    assert fake_server.count == 2


def test_graded_rows_are_kept_when_models_are_added(fake_server, tmp_path):
    out = tmp_path / "o.csv"
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        ponder.collect(PROMPTS, [MINI], client=client, output=out)
        graded = pd.read_csv(out).assign(score=[1.0, 0.0])
        graded.to_csv(out, index=False)
        table = ponder.collect(PROMPTS, [MINI, BIG], client=client, output=out)
    assert fake_server.count == 4
    scores = table.df.set_index(["query_id", "model"])["score"]
    assert scores[("q1", MINI)] == 1.0 and scores[("q2", MINI)] == 0.0 and scores[("q1", BIG)] != scores[("q1", BIG)]


@pytest.mark.slow
def test_interrupted_run_resumes_without_rerequesting(fake_server, tmp_path):
    rows = [{"id": f"q{i}", "prompt": f"question number {i}"} for i in range(8)]
    prompts = write_prompts(tmp_path / "p.jsonl", rows)
    out = tmp_path / "o.parquet"
    progress = tmp_path / "o.parquet.progress.jsonl"
    fake_server.default = Action(delay_s=0.25)
    args = [sys.executable, "-m", "ponder", "collect", str(prompts), "--model", MINI, "--output", str(out),
            "--base-url", fake_server.url, "--concurrency", "1", "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if progress.exists() and len(progress.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: only the progress file survives
    proc.wait()
    finished = {json.loads(line)["query_id"] for line in progress.read_text().splitlines()}
    assert 3 <= len(finished) < 8
    before = fake_server.count
    fake_server.default = Action()
    r = ponder_cli(*args[3:])
    assert r.returncode == 0, r.stderr
    asked_again = {r["body"]["messages"][0]["content"] for r in fake_server.requests[before:]}
    assert not asked_again & {f"question number {q[1:]}" for q in finished}
    df = pd.read_parquet(out)
    assert sorted(df.query_id) == sorted(r["id"] for r in rows) and df["error"].isna().all()


def test_provider_batch_builds_one_item_per_missing_call(fake_server, tmp_path):
    fake_server.batch_polls = 1
    cfg = Config(providers={"openai": ProviderSettings(type="openai", base_url=fake_server.url,
                                                       api_key="sk-test-planted-key-0123456789")})
    out = tmp_path / "o.jsonl"
    with Client(cfg, cache=False) as client:
        table = ponder.collect(PROMPTS, [MINI], client=client, output=out, provider_batch=True,
                               batch_poll_s=0.01)
    assert (tmp_path / "o.jsonl.batches.json").exists()
    df = table.df.set_index("query_id")
    assert df.loc["q1", "response"] == "echo: hello world" and df["error"].isna().all()
    full = cost(MINI, Usage(input_tokens=2, output_tokens=3))
    assert df.loc["q1", "cost_usd"] == pytest.approx(full / 2)  # the batch rate
    n = fake_server.count
    with Client(cfg, cache=False) as client:
        ponder.collect(PROMPTS, [MINI], client=client, output=out, provider_batch=True, batch_poll_s=0.01)
    assert fake_server.count == n  # nothing missing: no batch
