"""Own data with tools and schemas: ``ponder collect`` rows that carry ``tools``, ``tool_choice``,
``response_format`` and content parts reach the upstream (the fake server over real HTTP) as
written; the outcome table keeps the answers' tool calls as JSON through resume and samples;
``ponder grade --grader tool_call`` and ``--grader json`` (with the row's schema) score them."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

import ponder
from ponder import Client, DataError
from ponder._config import Config
from ponder.cli import app
from ponder.collect import read_prompts
from ponder.evaluation import OutcomeTable
from ponder.grading import JsonGrader, ToolCallGrader, grade_table, parse_grader
from tests.fakeserver import Action

MINI = "openai:gpt-4o-mini"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["C", "F"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
PERSON = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"]}}}
HISTORY = [  # a turn that called a tool, its result, then a question with an image
    {"role": "user", "content": "weather in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": -3}"},
    {"role": "user", "content": [{"type": "text", "text": "and what is in this picture?"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
]
ROWS = [
    {"id": "w1", "prompt": "weather in Paris and the time in Tokyo?", "tools": [WEATHER, TIME],
     "tool_choice": "required",
     "reference": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                   {"name": "get_time", "arguments": {"tz": "Asia/Tokyo"}}]},
    {"id": "h1", "messages": HISTORY, "tools": [WEATHER],
     "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    {"id": "j1", "prompt": "invent a person", "response_format": PERSON},
]


def call(name: str, args: dict, i: int = 1) -> dict:
    return {"id": f"call_{name}_{i}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)}}


def calls_answer(*calls: dict) -> Action:
    return Action(message={"role": "assistant", "content": None, "tool_calls": list(calls)})


def write_rows(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:  # CSV: structured cells as JSON text, tool_choice as written (a bare word stays one)
        pd.DataFrame([{k: v if isinstance(v, str) else json.dumps(v) for k, v in r.items()}
                      for r in rows]).to_csv(path, index=False)
    return path


# ---- collect ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [".jsonl", ".csv"])
def test_rows_with_tools_schemas_and_parts_reach_the_upstream_and_the_table_keeps_tool_calls(
        fake_server, tmp_path, fmt):
    prompts = write_rows(tmp_path / f"p{fmt}", ROWS)
    out = tmp_path / "o.csv"
    answered = [call("get_time", {"tz": "Asia/Tokyo"}, 2), call("get_weather", {"city": "Paris"})]
    fake_server.queue(calls_answer(*answered), calls_answer(call("get_weather", {"city": "Oslo"})),
                      Action(text='{"name": "Ada", "age": 36}'))
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        table = ponder.collect(prompts, [MINI], client=client, output=out, concurrency=1)
    bodies = [r["body"] for r in fake_server.requests]
    assert len(bodies) == 3
    assert bodies[0]["tools"] == [WEATHER, TIME] and bodies[0]["tool_choice"] == "required"
    assert bodies[1]["messages"] == HISTORY  # tool ids, null content and parts exactly as written
    assert bodies[1]["tool_choice"] == ROWS[1]["tool_choice"]
    assert bodies[2]["response_format"] == PERSON and "tools" not in bodies[2]
    assert all(b["messages"] == [{"role": "user", "content": r["prompt"]}]
               for b, r in zip(bodies, ROWS, strict=True) if "prompt" in r)  # no nulls added

    df = table.df.set_index("query_id")
    assert json.loads(df.loc["w1", "tool_calls"]) == answered and df.loc["w1", "response"] == ""
    assert json.loads(df.loc["h1", "tool_calls"]) == [call("get_weather", {"city": "Oslo"})]
    assert pd.isna(df.loc["j1", "tool_calls"]) and df.loc["j1", "response"] == '{"name": "Ada", "age": 36}'
    assert json.loads(df.loc["j1", "response_format"]) == PERSON
    assert json.loads(df.loc["w1", "reference"])[0]["name"] == "get_weather"  # structured: JSON text
    assert "get_weather" in df.loc["w1", "query"]  # the tools offered tell the query apart

    read = OutcomeTable.read(out, graded=False)  # the table on disk, with its tool calls
    w1 = read.query_ids.index("w1"), 0
    assert read.tool_calls[w1] == tuple(answered)
    assert read.tool_calls[read.query_ids.index("j1"), 0] == ()

    with Client(Config(), base_urls={"openai": fake_server.url}) as client:  # nothing is asked again
        again = ponder.collect(prompts, [MINI], client=client, output=out)
    assert fake_server.count == 3
    assert json.loads(again.df.set_index("query_id").loc["w1", "tool_calls"]) == answered


def test_tool_calls_survive_resume_and_more_samples_are_graded_each_with_its_own(fake_server, tmp_path):
    rows = [{"id": "a", "prompt": "weather in Paris?", "tools": [WEATHER],
             "reference": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "b", "prompt": "weather in Rome?", "tools": [WEATHER],
             "reference": json.dumps([{"type": "function", "function": {
                 "name": "get_weather", "arguments": json.dumps({"city": "Rome"})}}])}]
    out = tmp_path / "o.jsonl"
    paris = call("get_weather", {"city": "Paris"})
    fake_server.queue(calls_answer(paris), Action(kind="status", status=400))
    with Client(Config(), cache=False, base_urls={"openai": fake_server.url}) as client:
        first = ponder.collect(rows, [MINI], client=client, output=out, concurrency=1)
        assert json.loads(first.df.set_index("query_id").loc["a", "tool_calls"]) == [paris]
        assert (tmp_path / "o.jsonl.progress.jsonl").exists()  # b failed: the progress file stays
        # the rerun asks b only; a's row is rebuilt from its progress record, calls included
        fake_server.queue(calls_answer(call("get_weather", {"city": "rome"})))
        second = ponder.collect(rows, [MINI], client=client, output=out)
        assert fake_server.count == 3
        df = second.df.set_index("query_id")
        assert json.loads(df.loc["a", "tool_calls"]) == [paris] and df["error"].isna().all()
        # a second sample: sample 0's calls come back from the output table, sample 1 is asked
        fake_server.queue(calls_answer(call("get_weather", {"city": "Lyon"}, 2)),
                          calls_answer(call("get_weather", {"city": "Rome"}, 2)))
        third = ponder.collect(rows, [MINI], client=client, output=out, samples=2, temperature=0.7,
                               concurrency=1)
    assert fake_server.count == 5
    df = third.df.set_index("query_id")
    assert json.loads(df.loc["a", "tool_calls"]) == [paris]
    assert json.loads(df.loc["a", "sample_tool_calls"]) == [[paris], [call("get_weather", {"city": "Lyon"}, 2)]]

    graded = grade_table(out, parse_grader("tool_call")).df.set_index("query_id")
    assert graded.loc["a", "score"] == 1.0 and json.loads(graded.loc["a", "sample_scores"]) == [1.0, 0.0]
    assert graded.loc["b", "score"] == 0.0 and "city: expected \"Rome\", got \"rome\"" in graded.loc["b", "grade_reason"]
    assert json.loads(graded.loc["b", "sample_scores"]) == [0.0, 1.0]


def test_tools_count_in_the_estimate(tmp_path):
    plain = [{"id": "a", "prompt": "weather in Paris?"}]
    with Client(Config(), cache=False) as client:
        without = ponder.estimate_collect(plain, [MINI], client=client)[0].input_tokens
        with_tools = ponder.estimate_collect([{**plain[0], "tools": [WEATHER, TIME]}], [MINI],
                                             client=client)[0].input_tokens
    assert with_tools > without + 20  # the tool definitions are billed as input


@pytest.mark.parametrize(("row", "column", "reason"), [
    ({"tools": {"name": "x"}}, "tools", "must be a non-empty list"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools",
     "tools[0].function.name must be a non-empty string"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]},
     "tools", "tools[0].function.parameters is not a valid JSON Schema"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
     "tool_choice", "names 'get_time', which is not in the row's tools"),
    ({"tool_choice": "required"}, "tool_choice", "needs the row's tools"),
    ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice", "must be auto, none, required"),
    ({"response_format": {"type": "xml"}}, "response_format", "must be {type: text}"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": 5}}}},
     "response_format", "json_schema.schema is not a valid JSON Schema"),
    ({"response_format": "{not json"}, "response_format", "not JSON"),
])
def test_bad_tool_and_schema_cells_are_named(tmp_path, row, column, reason):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "ok", "prompt": "x"}) + "\n"
                    + json.dumps({"id": "bad", "prompt": "y", **row}) + "\n")
    with pytest.raises(DataError) as err:
        read_prompts(path)
    assert f"{path}, row 2, column '{column}'" in str(err.value) and reason in str(err.value)


def test_bad_tools_cell_in_csv_is_named(tmp_path):
    path = tmp_path / "p.csv"
    good = 'id,prompt,tools,tool_choice\na,hi,"[{""type"": ""function"", ""function"": {""name"": ""f""}}]",auto\n'
    path.write_text(good)
    request = read_prompts(path)[0].request
    assert request.tool_choice == "auto" and request.tools[0]["function"]["name"] == "f"
    path.write_text(good + "b,hi,[{oops,\n")
    with pytest.raises(DataError, match=r"p.csv, row 2, column 'tools': not JSON"):
        read_prompts(path)


# ---- the table -------------------------------------------------------------------------------
def test_table_tool_calls_column_is_checked_and_optional(tmp_path):
    base = {"query_id": "q", "query": "x", "model": "m", "response": "", "score": 1.0, "cost_usd": 0.0}
    table = OutcomeTable.read(pd.DataFrame([base]))  # an old table: no column, no calls
    assert table.tool_calls[0, 0] == ()
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(base) + "\n" + json.dumps({**base, "query_id": "r", "tool_calls": "[1, 2]"}) + "\n")
    with pytest.raises(DataError, match=r"t.jsonl, row 2, column 'tool_calls': .*list of tool-call objects"):
        OutcomeTable.read(path)


# ---- grading ---------------------------------------------------------------------------------
PARIS = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}


@pytest.mark.parametrize(("calls", "reference", "score", "reason"), [
    ([call("get_weather", {"unit": "C", "city": "Paris"})], PARIS, 1.0, "called get_weather as expected"),
    ([{"type": "function", "function": {"name": "get_weather",
                                        "arguments": '{ "city":"Paris",\n "unit": "C" }'}}], [PARIS], 1.0, ""),
    ([call("get_time", {"tz": "UTC"}), call("get_weather", {"city": "Paris", "unit": "C"})],
     [PARIS, {"type": "function", "function": {"name": "get_time", "arguments": '{"tz": "UTC"}'}}], 1.0, ""),
    ([call("f", {"n": 1.0, "ok": True})], {"name": "f", "arguments": {"n": 1, "ok": True}}, 1.0, ""),
    ([call("f", {"n": 1})], {"name": "f", "arguments": {"n": True}}, 0.0, "n: expected true, got 1"),
    ([call("get_weather", {"city": "paris", "unit": "C"})], PARIS, 0.0, 'city: expected "Paris", got "paris"'),
    ([call("get_weather", {"city": "Paris"})], PARIS, 0.0, "unit is missing"),
    ([call("get_time", {"tz": "UTC"})], PARIS, 0.0, "missing get_weather; unexpected get_time"),
    ([call("get_weather", {"city": "Paris", "unit": "C"})] * 2, PARIS, 0.0, "unexpected get_weather"),
    ([], PARIS, 0.0, "called no tool; expected get_weather"),
    ([], [], 1.0, "called no tool, as expected"),
    ([call("f", {})], [], 0.0, "expected no tool call; called f"),
    ([{"type": "function", "function": {"name": "get_weather", "arguments": "{city: Paris"}}], PARIS, 0.0,
     "arguments are not JSON"),
    ({"role": "assistant", "tool_calls": [call("g", {})]}, {"tool_calls": [{"function": {"name": "g"}}]}, 1.0, ""),
])
def test_tool_call_grader(calls, reference, score, reason):
    cell = calls["tool_calls"] if isinstance(calls, dict) else calls
    g = ToolCallGrader().grade("", {"reference": json.dumps(reference), "tool_calls": json.dumps(cell)})
    assert g.score == score and reason in g.reason


def test_tool_call_grader_unreadable_reference_and_table_without_the_column(tmp_path):
    g = ToolCallGrader().grade("", {"reference": "get_weather(Paris)", "tool_calls": "[]"})
    assert math.isnan(g.score) and "the reference is not a tool call" in g.reason
    path = tmp_path / "old.csv"
    path.write_text("query_id,query,model,response,reference\nq,x,m,hi,\"{\"\"name\"\": \"\"f\"\"}\"\n")
    with pytest.raises(DataError, match=r"old.csv, column 'tool_calls': has no 'tool_calls' column"):
        grade_table(path, ToolCallGrader())
    # a hand-written JSONL table: the reference and the calls as JSON values, not text
    row = {"query_id": "q", "query": "x", "model": "m", "response": "",
           "reference": {"name": "f", "arguments": {"a": [1, 2]}},
           "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": '{"a": [1, 2]}'}}]}
    path = tmp_path / "own.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "query_id": "r", "tool_calls": {"f": 1}}) + "\n")
    with pytest.raises(DataError, match=r"own.jsonl, row 2, column 'tool_calls'"):
        grade_table(path, ToolCallGrader())  # named before anything is graded
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "query_id": "r", "tool_calls": None}) + "\n")
    grade_table(path, ToolCallGrader(), output=tmp_path / "graded.parquet")
    graded = pd.read_parquet(tmp_path / "graded.parquet")
    assert graded["score"].tolist() == [1.0, 0.0]
    assert json.loads(graded["tool_calls"][0]) == row["tool_calls"]  # written back as JSON text


def test_cli_grades_collected_tool_calls(fake_server, tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"weather in {city}?", "tools": [WEATHER],
             "reference": {"name": "get_weather", "arguments": {"city": city}}}
            for i, city in enumerate(["Paris", "Rome", "Oslo"])]
    prompts = write_rows(tmp_path / "p.jsonl", rows)
    fake_server.queue(calls_answer(call("get_weather", {"city": "Paris"})),
                      calls_answer(call("get_time", {"tz": "Europe/Rome"})),
                      Action(text="It is cold in Oslo."))
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        ponder.collect(prompts, [MINI], client=client, output=tmp_path / "o.parquet", concurrency=1)
    r = CliRunner().invoke(app, ["grade", str(tmp_path / "o.parquet"), "--grader", "tool_call",
                                 "--output", str(tmp_path / "g.csv"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["graders"] == {"tool_call": 3}
    out = pd.read_csv(tmp_path / "g.csv").set_index("query_id")
    assert out["score"].to_dict() == {"r0": 1.0, "r1": 0.0, "r2": 0.0}
    assert "called no tool" in out.loc["r2", "grade_reason"]
    assert json.loads(out.loc["r0", "tool_calls"])[0]["function"]["name"] == "get_weather"


def test_json_grader_takes_the_schema_from_the_row(fake_server, tmp_path):
    replies = {"a": '{"name": "Ada", "age": 36}', "b": '{"name": "Bo", "age": "old"}',
               "c": '{"name": "Cy", "age": 3, "pet": "cat"}', "d": '{"name": "Di"',
               "e": '[1, 2]', "f": '{"x": 1}'}
    obj = {"type": "json_object"}
    rows = [{"id": k, "prompt": f"person {k}", "response_format": obj if k in "ef" else PERSON}
            for k in replies]
    fake_server.replier = lambda body: replies[body["messages"][-1]["content"].split()[-1]]
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        ponder.collect(rows, [MINI], client=client, output=tmp_path / "o.jsonl")
    graded = grade_table(tmp_path / "o.jsonl", parse_grader("json")).df.set_index("query_id")
    assert graded["score"].to_dict() == {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0, "e": 0.0, "f": 1.0}
    assert "age" in graded.loc["b", "grade_reason"]
    assert "pet" in graded.loc["c", "grade_reason"]  # strict: no keys the schema does not list
    assert graded.loc["a", "grade_reason"] == "valid JSON matching the row's schema"
    assert graded.loc["e", "grade_reason"] == "valid JSON, but not an object"


def test_json_grader_schema_column_and_bad_row_schema():
    schema = json.dumps({"type": "object", "required": ["id"]})
    assert JsonGrader().grade('{"id": 1}', {"schema": schema}).score == 1.0
    g = JsonGrader().grade('{"name": 1}', {"schema": schema})
    assert g.score == 0.0 and "'id' is a required property" in g.reason
    assert JsonGrader().grade('{"name": 1}', {"schema": {"type": "object", "required": ["id"]}}).score == 0.0
    bad = JsonGrader().grade('{"id": 1}', {"schema": '{"type": 7}'})
    assert math.isnan(bad.score) and "the row's schema is not a valid JSON Schema" in bad.reason
    assert JsonGrader().grade('{"id": 1}', {"schema": float("nan")}).score == 1.0  # an empty cell
