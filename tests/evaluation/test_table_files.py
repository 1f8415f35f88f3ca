"""One reader and one writer (``ponder.evaluation._table``) for every outcome table that grading,
collect and dataset export read and write: the format by suffix, exact numbers, Parquet's lists
kept as lists, the format checked before anything is paid."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import ponder
from ponder import Client, DataError
from ponder._config import Config
from ponder.evaluation import OutcomeTable, export_dataset
from ponder.evaluation._table import write_table
from ponder.grading import ExactMatch, grade_table

ROWS = pd.DataFrame({"query_id": ["q1", "q2"], "query": ["a", "b"], "model": ["m", "m"],
                     "response": ["x", "y"], "reference": ["x", "z"],
                     "cost_usd": [1.2345678901234567e-07, 0.1 + 0.2]})


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".parquet", ".pq"])
def test_a_graded_table_comes_back_exactly_in_every_format(tmp_path, suffix):
    out = grade_table(ROWS, ExactMatch(), output=tmp_path / "sub" / f"g{suffix}").summary.output
    back = OutcomeTable.read(out)
    assert back.df["cost_usd"].tolist() == ROWS["cost_usd"].tolist()  # not rounded to 10 places
    assert back.df.set_index("query_id")["score"].to_dict() == {"q1": 1.0, "q2": 0.0}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [f"g{suffix}"]  # no temporary left


def test_jsonl_keeps_parquet_lists_and_writes_gaps_as_null(tmp_path):
    df = pd.DataFrame({"query_id": ["q1", "q2"], "samples": [np.array(["a", "b"]), None],
                       "score": [np.nan, 0.5], "n": pd.array([1, None], dtype="Int64")})
    lines = write_table(df, tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == [
        {"query_id": "q1", "samples": ["a", "b"], "score": None, "n": 1},
        {"query_id": "q2", "samples": None, "score": 0.5, "n": None}]


def test_an_unknown_output_format_fails_before_anything_is_graded_or_read(tmp_path, monkeypatch):
    graded = []
    monkeypatch.setattr(ExactMatch, "grade", lambda self, response, row: graded.append(response))
    with pytest.raises(DataError, match=r"g\.txt: unknown format; use \.csv, \.jsonl or \.parquet"):
        grade_table(ROWS, ExactMatch(), output=tmp_path / "g.txt")
    with pytest.raises(DataError, match="unknown format"):
        export_dataset("no-such-dataset", tmp_path / "x.xlsx")
    with pytest.raises(DataError, match="unknown format"):
        ponder.collect([{"id": "q", "prompt": "hi"}], ["openai:m"], client=Client(Config(), cache=False),
                       output=tmp_path / "o.txt")
    assert graded == [] and not list(tmp_path.iterdir())


def test_collect_writes_gzipped_jsonl(fake_server, tmp_path):
    out = tmp_path / "o.jsonl.gz"
    with Client(Config(), base_urls={"openai": fake_server.url}) as client:
        ponder.collect([{"id": "q", "prompt": "hi"}], ["openai:gpt-4o-mini"], client=client, output=out)
        again = ponder.collect([{"id": "q", "prompt": "hi"}], ["openai:gpt-4o-mini"], client=client,
                               output=out)
    assert fake_server.count == 1 and again.df["response"].tolist() == ["echo: hi"]
