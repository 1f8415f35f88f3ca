"""``ponder grade``: every grader on tricky cases, judges over a real HTTP server, the CLI end to end."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import ponder
from ponder import Config, DataError, PonderError
from ponder.cli import app
from ponder.grading import (
    ChoiceGrader,
    CodeGrader,
    ExactMatch,
    JsonGrader,
    JudgeGrader,
    NumberGrader,
    RegexGrader,
    agreement,
    extract_choice,
    extract_number,
    grade_table,
    parse_grader,
    parse_graders,
)


# ---- reference graders -----------------------------------------------------------------------
@pytest.mark.parametrize("response, reference, expected", [
    ("26 + 28 = 54", "54", 1.0),  # the last number, not the first
    ("26 + 28 = 54. So 54 apples.", "#### 54", 1.0),
    (r"so the total is \boxed{1,234} dollars, not 99", "1234", 1.0),  # boxed beats the last number
    (r"\boxed{\frac{3}{4}}", "0.75", 1.0),
    ("It is 3/4 of the cake", "0.75", 1.0),
    ("The price is $1,234.50.", "1234.5", 1.0),
    ("About 50%", "50", 1.0),
    ("The temperature is -5 degrees", "-5", 1.0),
    ("The temperature is 5 degrees", "-5", 0.0),
    ("26-28 of them", "28", 1.0),  # a range, not a negative number
    ("1,000,000", "1000000", 1.0),
    ("0.333", "1/3", 0.0),  # outside the default tolerance
    ("no idea", "3", 0.0),
])
def test_number_grader(response, reference, expected):
    assert NumberGrader().grade(response, {"reference": reference}).score == expected


def test_number_tolerance_and_unreadable_reference():
    assert NumberGrader(tolerance=1e-3).grade("0.333", {"reference": "1/3"}).score == 1.0
    g = NumberGrader().grade("4", {"reference": "four"})
    assert math.isnan(g.score) and "reference" in g.reason
    assert extract_number("x = −2.5") == -2.5  # a Unicode minus sign


@pytest.mark.parametrize("answer, letter", [
    ("The answer is (B)", "B"), ("B.", "B"), ("**B**", "B"), ("(C) 42", "C"), ("D: none", "D"),
    ("Answer: **E**", "E"), ("the answer is (b).", "B"), (r"\boxed{J}", "J"),
    ("A is tempting, but the answer is C.", "C"), ("Between (A) and (B), pick (B)", "B"),
    ("The answer is a bit unclear", None), ("Paris", None),
])
def test_choice_extraction(answer, letter):
    assert extract_choice(answer) == letter


def test_choice_grader():
    assert ChoiceGrader().grade("The answer is (B)", {"reference": "B"}).score == 1.0
    wrong = ChoiceGrader().grade("**C**", {"reference": "(B)"})
    assert wrong.score == 0.0 and "expected B" in wrong.reason


def test_exact_normalises_case_space_punctuation_articles():
    g = ExactMatch()
    assert g.grade("  The Eiffel   Tower! ", {"reference": "eiffel tower"}).score == 1.0
    assert g.grade("An apple.", {"reference": "apple"}).score == 1.0
    assert g.grade("Eiffel Towers", {"reference": "eiffel tower"}).score == 0.0


def test_regex_and_json(tmp_path):
    assert RegexGrader(r"^\d{3}$").grade("abc\n123", {}).score == 1.0
    assert RegexGrader(r"ans: {reference}\b").grade("ans: 1.5", {"reference": "1.5"}).score == 1.0
    assert RegexGrader(r"ans: {reference}\b").grade("ans: 105", {"reference": "1.5"}).score == 0.0
    with pytest.raises(ponder.ConfigError):
        parse_grader("regex:(")
    assert JsonGrader().grade('```json\n{"a": 1}\n```', {}).score == 1.0
    assert JsonGrader().grade("{'a': 1}", {}).score == 0.0
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["name"],
                                  "properties": {"name": {"type": "string"}}}))
    g = parse_grader(f"json:{schema}")
    assert g.grade('{"name": "x"}', {}).score == 1.0
    bad = g.grade('{"name": 3}', {})
    assert bad.score == 0.0 and "name" in bad.reason
    with pytest.raises(ponder.ConfigError, match="not found"):
        parse_grader(f"json:{tmp_path / 'nope.json'}")


# ---- code grader -----------------------------------------------------------------------------
def _code(**kw):
    # where this machine cannot isolate, these still check the grading (the isolation itself is
    # tested, or skipped with a reason, in test_code_grader_sandbox.py)
    return CodeGrader(allow_code_execution=True, allow_no_isolation=True, **kw)


def test_code_grader_refuses_without_the_flag():
    with pytest.raises(PonderError, match="untrusted"):
        CodeGrader()
    with pytest.raises(PonderError, match="--allow-code-execution"):
        parse_grader("code")


def test_code_grader_pass_fail_and_isolation(tmp_path):
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
    good = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert _code().grade(good, {"tests": tests}).score == 1.0
    bad = _code().grade("def add(a, b):\n    return a - b", {"tests": tests})
    assert bad.score == 0.0 and "AssertionError" in bad.reason
    # runs in a throwaway folder, not ours
    probe = f"import os\nassert os.getcwd() != {os.getcwd()!r} and 'solution.py' in os.listdir()"
    assert _code().grade(probe, {"tests": "pass"}).score == 1.0
    net = "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)"
    blocked = _code().grade(net, {"tests": "pass"})
    assert blocked.score == 0.0 and "network" in blocked.reason.lower()


@pytest.mark.slow
def test_code_grader_timeout_and_memory_bomb():
    slow = _code(timeout_s=1).grade("import time\ntime.sleep(30)", {"tests": "pass"})
    assert slow.score == 0.0 and "timed out" in slow.reason
    bomb = _code(memory_mb=256).grade("x = bytearray(4 * 1024 ** 3)", {"tests": "pass"})
    assert bomb.score == 0.0 and "MemoryError" in bomb.reason


# ---- agreement -------------------------------------------------------------------------------
def test_agreement_matches_a_hand_computed_kappa():
    trusted = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0, math.nan]
    graded = [1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1]
    a = agreement(trusted, graded)
    # n=10: both pass 4, both fail 4, trusted only 1, grader only 1
    # po = 0.8; pe = (5*5 + 5*5) / 100 = 0.5; kappa = (0.8 - 0.5) / 0.5 = 0.6
    assert (a.n, a.both_positive, a.both_negative, a.trusted_only, a.grader_only) == (10, 4, 4, 1, 1)
    assert a.accuracy == pytest.approx(0.8) and a.kappa == pytest.approx(0.6)
    assert agreement([1, 1], [1, 1]).to_dict()["kappa"] is None  # one class: undefined


# ---- tables ----------------------------------------------------------------------------------
def _rows(n: int = 3) -> list[dict]:
    out = []
    for i in range(n):
        for model, answer in (("cheap:m", f"I think {i + 1}"), ("big:m", f"26 + 28 = {i}")):
            out.append({"query_id": f"q{i}", "query": f"what is {i}?", "model": model,
                        "response": answer, "reference": str(i), "cost_usd": 0.001})
    return out


def test_table_missing_reference_names_file_row_and_column(tmp_path):
    rows = _rows()
    rows[3]["reference"] = None
    path = tmp_path / "in.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    with pytest.raises(DataError) as err:
        grade_table(path, NumberGrader())
    assert (err.value.file, err.value.row, err.value.column) == (str(path), 4, "reference")
    assert "number" in str(err.value)
    with pytest.raises(DataError, match="response"):
        grade_table(pd.DataFrame([{"query_id": "q", "query": "x", "model": "m"}]), ExactMatch())


def test_samples_are_graded_too():
    df = pd.DataFrame([{"query_id": "q", "query": "?", "model": "m", "response": "= 4",
                        "reference": "4", "samples": json.dumps(["= 4", "= 5", "it is 4"])}])
    result = grade_table(df, NumberGrader())
    assert json.loads(result.df["sample_scores"][0]) == [1.0, 0.0, 1.0]
    assert result.df["score"][0] == 1.0 and result.summary.n_samples == 3


def test_per_task_graders_mix_math_choice_and_code():
    df = pd.DataFrame([
        {"query_id": "1", "query": "2+2", "model": "m", "response": "2+2=4", "reference": "4",
         "task": "math"},
        {"query_id": "2", "query": "pick", "model": "m", "response": "The answer is (C)",
         "reference": "B", "task": "mc"},
        {"query_id": "3", "query": "add", "model": "m", "response": "def f(x): return x + 1",
         "tests": "assert f(1) == 2", "task": "code"},
        {"query_id": "4", "query": "say hi", "model": "m", "response": "Hello!",
         "reference": "hello", "task": "chat"},
    ])
    cfg = Config.model_validate({"graders": {"math": "number", "mc": "choice", "code": "code",
                                             "default": "exact"}})
    graders = parse_graders(cfg.graders, allow_code_execution=True, allow_no_isolation=True)
    result = grade_table(df, graders)
    assert list(result.df["score"]) == [1.0, 0.0, 1.0, 1.0]
    assert result.summary.graders == {"number": 1, "choice": 1, "code": 1, "exact": 1}
    with pytest.raises(DataError, match="no grader for task"):
        grade_table(df, {"math": NumberGrader()})


# ---- judges over a real HTTP server ----------------------------------------------------------
def _enclosed(text: str, header: str) -> str:
    """The value after ``header``, inside the judge prompt's data markers."""
    m = re.search(re.escape(header) + r"\s*<<<BEGIN DATA (\w+)>>>\n(.*?)\n<<<END DATA \1>>>", text,
                  re.S)
    assert m, text
    return m.group(2).strip()


def _judge_reply(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    if "[Reference Answer]" in prompt:
        ref = _enclosed(prompt, "[Reference Answer]")
        answer = _enclosed(prompt, "[Assistant's Answer]")
        return "Checked.\nVerdict: [[yes]]" if ref in answer else "Wrong.\nVerdict: [[no]]"
    if "Assistant A's Answer" in prompt:
        a = _enclosed(prompt, "[Assistant A's Answer]")
        b = _enclosed(prompt, "[Assistant B's Answer]")
        if "good" in a and "good" not in b:
            return "[[A]]"
        return "[[B]]" if "good" in b and "good" not in a else "[[C]]"
    answer = _enclosed(prompt, "[Assistant's Answer]")
    if "confusing" in answer:
        return "I cannot rate this."
    return "Rating: [[10]]" if "good" in answer else "Rating: [[4]]"


def _config(url: str, cache_dir: Path | None = None) -> Config:
    return Config.model_validate({
        "providers": {"fake": {"type": "openai", "base_url": url, "max_retries": 0}},
        "prices": {"fake:m": {"input": 1.0, "output": 2.0}},
        "cache": {"enabled": cache_dir is not None, "path": str(cache_dir or "")}})


def test_judge_correctness_and_rubric_cached_second_run_is_free(fake_server, tmp_path):
    fake_server.replier = _judge_reply
    df = pd.DataFrame([
        {"query_id": "1", "query": "capital of France?", "model": "m", "response": "It is Paris.",
         "reference": "Paris", "cost_usd": 0.5},
        {"query_id": "2", "query": "capital of Spain?", "model": "m", "response": "Lisbon",
         "reference": "Madrid", "cost_usd": 0.5},
        {"query_id": "3", "query": "write a poem", "model": "m", "response": "a good poem",
         "reference": None, "cost_usd": 0.5},
        {"query_id": "4", "query": "write a haiku", "model": "m", "response": "meh",
         "reference": None, "cost_usd": 0.5},
        {"query_id": "5", "query": "explain", "model": "m", "response": "confusing stuff",
         "reference": None, "cost_usd": 0.5},
    ])
    with ponder.Client(_config(fake_server.url, tmp_path / "cache")) as client:
        judge = parse_grader("judge:fake:m", client=client)
        first = grade_table(df, judge)
        scores = list(first.df["score"])
        assert scores[:4] == [1.0, 0.0, 1.0, pytest.approx(3 / 9)] and math.isnan(scores[4])
        assert "unparseable" in first.df["grade_reason"][4]
        assert first.summary.n_ungraded == 1 and first.summary.judge_calls == 5
        assert first.summary.judge_cost_usd > 0
        assert (first.df["judge_cost_usd"] > 0).all()
        assert list(first.df["cost_usd"]) == [0.5] * 5  # the judge's spending is kept apart
        requests = list(fake_server.requests)
        assert all(r["body"]["temperature"] == 0 for r in requests)
        second = grade_table(df, judge)
    assert fake_server.count == len(requests) == 5  # every judge call came from the cache
    assert second.summary.judge_cost_usd == 0 and second.summary.judge_cached_calls == 5
    assert list(second.df["score"][:4]) == scores[:4]


def test_judge_pairwise_asks_both_orders(fake_server):
    fake_server.replier = _judge_reply
    df = pd.DataFrame([
        {"query_id": "1", "query": "q1", "model": "base", "response": "plain answer"},
        {"query_id": "1", "query": "q1", "model": "new", "response": "a good answer"},
        {"query_id": "2", "query": "q2", "model": "base", "response": "a good answer"},
        {"query_id": "2", "query": "q2", "model": "new", "response": "plain answer"},
        {"query_id": "3", "query": "q3", "model": "new", "response": "anything"},
    ])
    with ponder.Client(_config(fake_server.url)) as client:
        judge = JudgeGrader("fake:m", client=client, baseline="base")
        result = grade_table(df, judge)
        scores = list(result.df["score"])
        assert scores[:4] == [0.5, 1.0, 0.5, 0.0] and math.isnan(scores[4])
        assert "no answer from the baseline" in result.df["grade_reason"][4]
        prompts = [r["body"]["messages"][-1]["content"] for r in fake_server.requests]
        assert len(prompts) == 4  # 2 rows x 2 orders; the baseline's own rows need no call
        firsts = [_enclosed(p, "[Assistant A's Answer]") for p in prompts]
        assert sorted(firsts) == sorted(["a good answer", "plain answer"] * 2)
        # a judge that always picks the first answer: position bias cancels to a tie
        fake_server.replier = lambda body: "[[A]]"
        biased = grade_table(df.iloc[:2], judge)
        assert list(biased.df["score"]) == [0.5, 0.5]


def test_judge_template_override_and_bad_placeholder(fake_server, tmp_path):
    fake_server.replier = lambda body: "[[yes]]"
    tpl = tmp_path / "t.txt"
    tpl.write_text("Q: {query}\nA: {response}\nGold: {reference}\nSay [[yes]] or [[no]].")
    with ponder.Client(_config(fake_server.url)) as client:
        judge = parse_grader("judge:fake:m", client=client,
                             templates={"correctness": ponder.grading.load_template(
                                 "correctness", tpl)})
        g = judge.grade("4", {"query": "2+2", "reference": "4"})
        assert g.score == 1.0 and g.calls == 1 and g.cost_usd > 0
    # the template's placeholders receive their values already enclosed in the data markers
    assert re.match(r"Q: <<<BEGIN DATA (\w+)>>>\n2\+2\n<<<END DATA \1>>>\nA: <<<BEGIN DATA \1>>>\n4\n",
                    fake_server.requests[-1]["body"]["messages"][-1]["content"])
    tpl.write_text("{query} {answer}")
    with pytest.raises(ponder.ConfigError, match=r"\{answer\}"):
        ponder.grading.load_template("rubric", tpl)


async def test_async_judge_shares_the_core(fake_server):
    fake_server.replier = _judge_reply
    async with ponder.Client(_config(fake_server.url)) as client:
        judge = JudgeGrader("fake:m", client=client)
        g = await judge.agrade("Paris", {"query": "?", "reference": "Paris"})
        result = await ponder.agrade_table(
            pd.DataFrame([{"query_id": str(i), "query": "?", "model": "m", "response": "good"}
                          for i in range(6)]), judge, concurrency=3)
    assert g.score == 1.0 and list(result.df["score"]) == [1.0] * 6


# ---- the CLI ---------------------------------------------------------------------------------
def _ponder(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ponder", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "PONDER_CONFIG": ""})


@pytest.mark.slow
def test_cli_grade_then_eval(tmp_path):
    rows = []
    for i in range(8):
        rows.append({"query_id": f"q{i}", "query": f"{i}+0?", "model": "openai:small",
                     "response": f"{i} + 0 = {i if i % 2 else i + 1}", "reference": str(i),
                     "cost_usd": 0.001, "score": None if i < 4 else float(i % 2)})
        rows.append({"query_id": f"q{i}", "query": f"{i}+0?", "model": "openai:big",
                     "response": f"\\boxed{{{i}}}", "reference": str(i), "cost_usd": 0.01,
                     "score": None})
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = _ponder("grade", "in.jsonl", "--grader", "number", "--output", "out.parquet",
                "--agreement", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "graded 16 of 16 rows with number (16)" in r.stdout
    assert "agreement with existing scores (n=4" in r.stdout and "accuracy 1.000" in r.stdout
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["score"].tolist() == [float(i % 2 == 1) if m == "openai:small" else 1.0
                                     for i in range(8) for m in ("openai:small", "openai:big")]
    assert {"grade_reason", "judge_cost_usd", "trusted_score"} <= set(out.columns)
    ev = _ponder("eval", "out.parquet", "--bootstrap", "0", "--report", "r.html", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert "openai:big" in ev.stdout


def test_cli_json_summary_config_graders_and_errors(tmp_path):
    (tmp_path / "in.csv").write_text(
        "query_id,query,model,response,reference,task\n"
        "1,a,m,The answer is (B),B,mc\n2,b,m,x = 3,3,math\n")
    (tmp_path / "ponder.toml").write_text('[graders]\nmc = "choice"\ndefault = "number"\n')
    (tmp_path / "nums.csv").write_text("query_id,query,model,response,reference\n"
                                       "1,a,m,1,1\n2,b,m,2,\n")
    with pytest.raises(DataError, match="row 2, column 'reference'"):  # a CSV gap: named
        grade_table(tmp_path / "nums.csv", ExactMatch())
    runner = CliRunner()
    r = runner.invoke(app, ["grade", str(tmp_path / "in.csv"), "--output",
                            str(tmp_path / "out.csv"), "--json", "--config",
                            str(tmp_path / "ponder.toml")])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["graders"] == {"choice": 1, "number": 1} and summary["mean_score"] == 1.0
    assert summary["judge_cost_usd"] == 0 and summary["agreement"] is None
    assert pd.read_csv(tmp_path / "out.csv")["score"].tolist() == [1.0, 1.0]
    code = _ponder("grade", "in.csv", "--grader", "code", "--output", "o.csv", cwd=tmp_path)
    assert code.returncode == 1 and "--allow-code-execution" in code.stderr
    assert "Traceback" not in code.stderr
    bad = _ponder("grade", "in.csv", "--grader", "nosuch", "--output", "o.csv", cwd=tmp_path)
    assert bad.returncode == 1 and re.search(r"unknown grader 'nosuch'", bad.stderr)


def test_cli_judge_pairwise_reports_judge_cost_apart(fake_server, tmp_path):
    fake_server.replier = _judge_reply
    pd.DataFrame([
        {"query_id": "1", "query": "q", "model": "base", "response": "plain", "cost_usd": 0.25},
        {"query_id": "1", "query": "q", "model": "new", "response": "a good one", "cost_usd": 0.5},
    ]).to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    (tmp_path / "ponder.toml").write_text(
        f'[providers.fake]\ntype = "openai"\nbase_url = "{fake_server.url}"\nmax_retries = 0\n'
        '[prices."fake:m"]\ninput = 1.0\noutput = 2.0\n[cache]\nenabled = false\n')
    args = ["grade", str(tmp_path / "in.jsonl"), "--grader", "judge:fake:m", "--pairwise", "base",
            "--output", str(tmp_path / "out.jsonl"), "--config", str(tmp_path / "ponder.toml")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "judge cost $" in r.stdout and "for 2 calls (0 cached); not included in cost_usd" in r.stdout
    out = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert out["score"].tolist() == [0.5, 1.0] and out["cost_usd"].tolist() == [0.25, 0.5]
    assert out["judge_cost_usd"][1] > 0 and out["judge_cost_usd"][0] == 0
    r = CliRunner().invoke(app, [*args, "--judge-template", "nope.txt", "--json"])
    assert r.exit_code != 0
