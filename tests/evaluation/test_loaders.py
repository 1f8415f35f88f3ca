"""Each loader against a small cut of the real public file (tests/fixtures/evaluation)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pandas as pd
import pytest

from ponder._answers import last_boxed
from ponder._exceptions import DataError
from ponder.evaluation import (
    load_dataset,
    load_generation_cache,
    load_routellm_gsm8k,
    load_routellm_mmlu,
    load_routellm_mtbench,
    load_routerarena,
    load_routerbench,
)
from ponder.evaluation._loaders import ROUTELLM_PRICES_PER_MTOK, score_boxed, score_prime


def cell(t, qid, model, what="scores"):
    return getattr(t, what)[t.query_ids.index(qid), t.models.index(model)]


def test_routerbench_wide_csv(fixtures):
    path = fixtures / "routerbench_wide.csv"
    t = load_routerbench(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    models = [c[: -len("|total_cost")] for c in rows[0] if c.endswith("|total_cost")]
    assert len(models) == 11 and set(t.models) == set(models)
    usable = [r for r in rows if any(r[m] != "" for m in models)]
    assert len(usable) == len(rows) - 1  # the row with no correctness at all is dropped
    ids = {r["sample_id"] for r in usable}
    assert len(ids) == len(usable) - 1  # one sample id is split over two rows (10 + 1 models)
    assert len(t.query_ids) == len(ids)
    assert len(t) == sum(r[m] != "" for r in usable for m in models)
    assert t.n_incomplete_queries == 0  # the split sample is merged back to 11 models
    r = usable[0]
    for m in models:
        assert cell(t, r["sample_id"], m) == float(r[m])
        assert cell(t, r["sample_id"], m, "costs") == float(r[f"{m}|total_cost"])
    assert set(t.df["split"]) == {"train", "test"}
    assert set(t.df["task"]) == {"arc-challenge", "mbpp", "winogrande"}
    assert not t.queries[0].startswith("['")  # the stringified list is unpacked


def test_routerbench_bad_cell_names_row_and_column(fixtures, tmp_path):
    text = (fixtures / "routerbench_wide.csv").read_text(encoding="utf-8")
    with open(fixtures / "routerbench_wide.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rows[2]["gpt-4-1106-preview"] = "maybe"
    bad = tmp_path / "rb.csv"
    with open(bad, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert text  # sanity: fixture readable
    with pytest.raises(DataError) as e:
        load_routerbench(bad)
    assert (e.value.row, e.value.column) == (4, "gpt-4-1106-preview")  # header is line 1
    assert str(bad) in str(e.value) and "maybe" in str(e.value)


def test_routellm_mmlu_decontaminates_and_prices(fixtures):
    path = fixtures / "mmlu_responses.csv"
    t = load_routellm_mmlu(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(t.query_ids) == len(rows) - 1  # one contaminated prompt dropped
    assert "college_chemistry" not in set(t.tasks)
    gpt4, mix = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert cell(t, "mmlu/anatomy/0", gpt4) == float(rows[0][gpt4] == "True")
    tokens = math.ceil(len(rows[0]["prompt"]) / 4) + 1
    assert cell(t, "mmlu/anatomy/0", gpt4, "costs") == pytest.approx(tokens * 24.7e-6)
    assert cell(t, "mmlu/anatomy/0", mix, "costs") == pytest.approx(tokens * 0.24e-6)
    assert set(ROUTELLM_PRICES_PER_MTOK) == {gpt4, mix}


def test_routellm_gsm8k(fixtures):
    path = fixtures / "gsm8k_responses.csv"
    t = load_routellm_gsm8k(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(t.query_ids) == 7  # 8 rows, the last is listed as contaminated
    gpt4 = "gpt-4-1106-preview"
    expect = np.mean([float(r[gpt4] == "True") for r in rows[:7]])
    assert np.nanmean(t.scores[:, t.models.index(gpt4)]) == pytest.approx(expect)
    assert t.responses[0, t.models.index(gpt4)] == rows[0][f"{gpt4}_response"]


def test_routellm_mtbench_single_grade_over_ten(fixtures):
    path = fixtures / "mt_bench_judgements.jsonl"
    t = load_routellm_mtbench(path)
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    qid, model = recs[0]["question_id"], recs[0]["model"]
    mine = [r["score"] for r in recs if r["question_id"] == qid and r["model"] == model]
    assert len(mine) == 2  # both turns
    assert cell(t, f"mt_bench/{qid}", model) == pytest.approx(np.mean(mine) / 10)
    assert set(t.tasks) <= {"writing", "roleplay"}  # categories from question.jsonl
    assert t.queries[0].startswith("Compose an engaging travel blog")


def test_llmdrift_prime_generation_cache(fixtures):
    path = fixtures / "PRIME_EVAL.csv"
    t = load_generation_cache(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(t) == len(rows) == 24 and len(t.models) == 4
    assert "gpt-4-0314" in t.models  # provider prefix dropped
    assert {r['dataset'] for r in rows} == {'prime', 'composite'}
    for r in rows:
        got = cell(t, f"{r['dataset']}/{r['id']}", r["model"].split("/")[-1])
        import re

        marks = re.findall(r"\[(yes|no)\]", r["answer"], flags=re.I)
        assert got == float(bool(marks) and marks[-1].lower() == r["ref_answer"].lower())
        assert cell(t, f"{r['dataset']}/{r['id']}", r["model"].split("/")[-1], "costs") == float(r["cost"])


def test_scoring_rules():
    assert score_prime("... so [No]. Final: [Yes]", "yes") == 1.0
    assert score_prime("I think [yes]", "No") == 0.0
    assert score_prime("no brackets", "No") == 0.0
    assert last_boxed(r"a \boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert score_boxed(r"so $\boxed{ 1,000 }$", "1000") == 1.0
    assert score_boxed(r"\boxed{12}", r"the answer is \boxed{13}") == 0.0
    assert score_boxed("no box", "3") == 0.0


def test_routerarena_cached_results(fixtures):
    folder = fixtures / "routerarena"
    t = load_routerarena(folder)
    assert set(t.models) == {"gemini-2.0-flash-001", "claude-3-haiku-20240307"}
    recs = [json.loads(x) for x in (folder / "claude-3-haiku-20240307.jsonl").read_text().splitlines()]
    for r in recs:
        ev = r["evaluation_result"]
        s = min(1.0, max(0.0, float(ev["score"])))  # METEOR can dip below 0; clipped
        assert cell(t, r["global_index"], "claude-3-haiku-20240307") == s
        assert cell(t, r["global_index"], "claude-3-haiku-20240307", "costs") == float(ev["inference_cost"])
    assert "NarrativeQA_4102" in t.query_ids
    assert "MMLUPro" in set(t.tasks)


@pytest.mark.parametrize("name", ["routerbench_wide.csv", "mmlu_responses.csv", "gsm8k_responses.csv",
                                  "mt_bench_judgements.jsonl", "PRIME_EVAL.csv", "routerarena"])
def test_load_dataset_sniffs_the_format(fixtures, name):
    t = load_dataset(fixtures / name)
    assert len(t) > 0 and len(t.models) >= 2


def test_unknown_name_is_a_clear_error():
    with pytest.raises(DataError, match="not a file and not a bundled dataset"):
        load_dataset("no-such-dataset")


def test_malformed_public_files_name_file_row_and_column(fixtures, tmp_path):
    lines = (fixtures / "mt_bench_judgements.jsonl").read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[2])
    rec["score"] = 11
    bad = tmp_path / "judgements.jsonl"
    bad.write_text("\n".join(lines[:2] + [json.dumps(rec)] + lines[3:]) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_routellm_mtbench(bad)
    assert (e.value.file, e.value.row, e.value.column) == (str(bad), 3, "score")

    rows = list(csv.DictReader(open(fixtures / "PRIME_EVAL.csv", newline="", encoding="utf-8")))
    rows[4]["cost"] = "free"
    bad = tmp_path / "PRIME.csv"
    with open(bad, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(DataError) as e:
        load_generation_cache(bad)
    assert (e.value.row, e.value.column) == (6, "cost") and "free" in str(e.value)

    recs = (fixtures / "routerarena" / "gemini-2.0-flash-001.jsonl").read_text().splitlines()
    r = json.loads(recs[1])
    del r["evaluation_result"]["inference_cost"]
    bad = tmp_path / "m.jsonl"
    bad.write_text(recs[0] + "\n" + json.dumps(r) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_routerarena(bad)
    assert (e.value.row, e.value.column) == (2, "evaluation_result")


@pytest.mark.parametrize("cost", [math.inf, -math.inf, math.nan, 1e13, 1e308])
def test_outcome_tables_refuse_costs_no_answer_can_have(cost):
    """A cost must be finite and at most MAX_COST_USD per row, so that no sum over a table (means,
    bootstrap resamples) overflows to inf; the error names the row and the column."""
    from ponder.evaluation import OutcomeTable

    rows = [{"query_id": f"q{i}", "query": "x", "model": "m", "score": 1.0, "cost_usd": 1.0}
            for i in range(3)]
    rows[1]["cost_usd"] = cost
    with pytest.raises(DataError) as e:
        OutcomeTable.read(pd.DataFrame(rows), name="t")
    assert (e.value.file, e.value.row, e.value.column) == ("t", 2, "cost_usd")
    from ponder.evaluation._table import MAX_COST_USD

    rows[1]["cost_usd"] = MAX_COST_USD  # the bound itself is allowed, and sums stay finite
    t = OutcomeTable.read(pd.DataFrame(rows), name="t")
    assert np.isfinite(t.costs.sum())
