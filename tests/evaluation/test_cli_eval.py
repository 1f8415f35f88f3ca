"""``ponder eval`` and ``ponder datasets`` end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ponder.cli import app
from tests.evaluation.conftest import hand_rows

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path, columns: int = 160) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-c", "from ponder.cli import main; main()", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_eval_without_argument_writes_report_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["eval", "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "llmdrift-prime" in page and "<svg" in page
    assert "gpt-4-0314" in res.output and "oracle" in res.output


@pytest.mark.slow
def test_eval_prints_hand_computed_figures(tmp_path):
    pd.DataFrame(hand_rows()).to_csv(tmp_path / "hand.csv", index=False)
    p = run_cli("eval", "hand.csv", "--json", "out.json", "--markdown", "out.md", "--report",
                "out.html", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    models_table = p.stdout.split("strategies:")[0]  # the first table: single models + oracle
    row = re.compile(r"^\s*(\S+(?: \*)?)\s+([\d.]+)\s+([\d.e-]+)\s+(\d+)\s*$")
    lines = {m.group(1): [m.group(2), m.group(3)]
             for m in map(row.match, models_table.splitlines()) if m}
    assert lines["a"][:2] == ["0.3750", "0.25"]
    assert lines["b"][:2] == ["0.6250", "0.5625"]
    assert lines["c *"][:2] == ["0.8125", "2.5"]
    assert lines["oracle"][:2] == ["0.8750", "0.75"]
    d = json.loads((tmp_path / "out.json").read_text())
    assert d["oracle"]["quality"] == 0.875 and d["best_model"]["model"] == "c"
    assert (tmp_path / "out.md").exists() and (tmp_path / "out.html").exists()


def test_malformed_table_ends_in_one_clear_error(tmp_path):
    rows = hand_rows()
    rows[2]["score"] = 1.5
    pd.DataFrame(rows).to_csv(tmp_path / "bad.csv", index=False)
    p = run_cli("eval", "bad.csv", cwd=tmp_path)
    assert p.returncode == 1
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "bad.csv" in err and "row 3" in err and "'score'" in err and "must be in [0, 1]" in err
    assert not (tmp_path / "report.html").exists()


def name_column(out: str, header: str, width: int = 80) -> list[str]:
    """The fragments of the name column of the table whose header line matches ``header``, in
    order (a name folded over lines gives one fragment per line); every line of the table must
    fit in ``width`` columns."""
    lines = out.splitlines()
    top = next(i for i, line in enumerate(lines) if re.match(header, line))
    x = re.match(header, lines[top]).start(1)
    body = []
    for line in lines[top:]:
        if not line.strip():
            break
        assert len(line.rstrip()) <= width, line
        if line[x:x + 1].strip():
            body.append(line[x:].split()[0])
    return body[2:]  # past the header and its rule


@pytest.mark.slow
def test_names_stay_whole_at_80_columns(tmp_path):
    """At 80 columns every model and strategy name is printed whole (folded over lines where it
    must, never cut with "…"), and the tables fit the terminal."""
    names = {"a": "openai:gpt-4o-mini-2024-07-18", "b": "anthropic:claude-3-5-sonnet-20241022",
             "c": "openrouter:meta-llama/llama-3.1-405b-instruct-turbo-preview-2025"}
    rows = hand_rows()
    for r in rows:
        r["model"] = names[r["model"]]
    pd.DataFrame(rows).to_csv(tmp_path / "long.csv", index=False)
    p = run_cli("eval", "long.csv", "--bootstrap", "10", "--json", "out.json", cwd=tmp_path,
                columns=80)
    assert p.returncode == 0, p.stderr
    assert "…" not in p.stdout
    d = json.loads((tmp_path / "out.json").read_text())
    models = [m["model"] for m in sorted(d["models"], key=lambda m: m["cost_usd"])]
    best = d["best_model"]["model"]
    got = "".join(f for f in name_column(p.stdout, r"^\s*(model)\s+quality") if f != "*")
    assert got == "".join(models) + "oracle" and best in models
    strategies = [s["name"] for s in d["strategies"]]
    assert any(len(s) > 40 for s in strategies)  # some must fold at 80 columns
    assert "".join(name_column(p.stdout, r"^\s*(strategy)\s+ratio")) == "".join(strategies)
    deployed = [s["name"] for s in d["strategies"] if s.get("deployed")]
    assert "".join(name_column(p.stdout, r"^\s*(strategy)\s+(?:best|quality)")) == "".join(deployed)


@pytest.mark.slow
@pytest.mark.parametrize(("cells", "row", "column", "message"), [
    ({4: ("cost_usd", "inf")}, 5, "cost_usd", "is not finite (got inf)"),
    ({4: ("cost_usd", "-inf")}, 5, "cost_usd", "is not finite (got -inf)"),
    ({7: ("score", "inf")}, 8, "score", "is not finite (got inf)"),
    # each cost is finite, but their sum (every mean, every bootstrap) overflows to inf
    ({2: ("cost_usd", "1e308"), 5: ("cost_usd", "1e308")}, 3, "cost_usd",
     "must be in [0, 1e+12] USD"),
])
def test_non_finite_or_absurd_figures_end_in_one_clear_error(tmp_path, cells, row, column,
                                                             message):
    rows = hand_rows()
    for i, (col, value) in cells.items():
        rows[i][col] = value
    pd.DataFrame(rows).to_csv(tmp_path / "bad.csv", index=False)
    p = run_cli("eval", "bad.csv", cwd=tmp_path)
    err = p.stderr.strip()
    assert p.returncode == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, p.stderr
    assert f"bad.csv, row {row}, column '{column}': {message}" in err
    assert not (tmp_path / "report.html").exists()


def test_missing_column_error(tmp_path):
    pd.DataFrame(hand_rows()).drop(columns="cost_usd").to_csv(tmp_path / "nocost.csv", index=False)
    p = run_cli("eval", "nocost.csv", cwd=tmp_path)
    assert p.returncode == 1 and "missing required column(s): cost_usd" in p.stderr


def test_datasets_list_and_export(tmp_path):
    r = CliRunner().invoke(app, ["datasets", "list"])
    assert r.exit_code == 0 and "routellm-gsm8k" in r.output and "Apache-2.0" in r.output
    out = tmp_path / "gsm8k.jsonl"
    r = CliRunner().invoke(app, ["datasets", "export", "routellm-gsm8k", str(out)])
    assert r.exit_code == 0, r.output
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert {"query_id", "query", "model", "score", "cost_usd"} <= set(first)
