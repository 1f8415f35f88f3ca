"""A table with answers a grader could not grade: refused with the row named, or those rows left out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ponder._exceptions import DataError
from ponder.evaluation import OutcomeTable
from tests.evaluation.conftest import hand_rows

ROOT = Path(__file__).resolve().parents[2]


def _ponder(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "ponder", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _with_a_hole(tmp_path: Path) -> Path:
    df = pd.DataFrame(hand_rows())
    df.loc[(df.query_id == "q2") & (df.model == "b"), "score"] = np.nan  # the judge gave up here
    path = tmp_path / "graded.csv"
    df.to_csv(path, index=False)
    return path


def test_eval_refuses_an_ungraded_row_and_names_it_and_the_way_out(tmp_path):
    path = _with_a_hole(tmp_path)
    r = _ponder("eval", path.name, "--bootstrap", "0", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "graded.csv" in r.stderr and "row 17" in r.stderr and "score" in r.stderr
    assert "--drop-ungraded" in r.stderr


@pytest.mark.slow
def test_drop_ungraded_leaves_out_only_those_rows(tmp_path):
    path = _with_a_hole(tmp_path)
    r = _ponder("eval", path.name, "--bootstrap", "0", "--drop-ungraded", "--json", "out.json",
                "--report", "r.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "left out 1 ungraded row(s) (empty score) of 24" in r.stderr
    table, dropped = OutcomeTable.read(path, graded=False).graded_only()
    assert dropped == 1 and len(table) == 23
    q2 = table.query_ids.index("q2")
    assert not table.present[q2, table.models.index("b")] and table.present[q2].sum() == 2
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["n_test_queries"] == 4


def test_graded_only_on_a_table_with_no_scores_at_all_is_refused():
    df = pd.DataFrame(hand_rows()).assign(score=np.nan, response="x")
    with pytest.raises(DataError, match="every score is empty"):
        OutcomeTable.read(df, graded=False).graded_only()
