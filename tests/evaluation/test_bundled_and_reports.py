"""Bundled data (offline, hash-checked) and the three renderings of one result."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest

from ponder._exceptions import DataError
from ponder.evaluation import (
    DEFAULT_DATASET,
    _bundled,
    evaluate,
    export_dataset,
    list_datasets,
    load_dataset,
)

BUNDLED = {"llmdrift-prime", "routellm-gsm8k", "routellm-mmlu", "routellm-mt-bench", "routerarena"}


def test_bundled_datasets_are_listed_small_and_apache():
    ds = {d["name"]: d for d in list_datasets()}
    assert set(ds) == BUNDLED and DEFAULT_DATASET in ds
    assert all(d["license"] == "Apache-2.0" for d in ds.values())
    assert not any("routerbench" in d["name"] for d in ds.values())
    total = sum((_bundled.DATA_DIR / d["file"]).stat().st_size for d in ds.values())
    assert total < 5_000_000
    notice = (_bundled.DATA_DIR.parent / "NOTICE").read_text(encoding="utf-8")
    for repo in ("lchen001/LLMDrift", "lm-sys/RouteLLM", "RouteWorks/RouterArena"):
        assert repo in notice


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_each_bundled_dataset_loads_and_matches_its_index(name):
    entry = {d["name"]: d for d in list_datasets()}[name]
    t = load_dataset(name)
    assert (len(t), len(t.query_ids), sorted(t.models)) == (
        entry["n_rows"], entry["n_queries"], sorted(entry["models"]))


def test_prime_matches_the_published_accuracies():
    # LLMDrift's paper: GPT-4 84.0% (March) → 51.1% (June); SOURCE.md rescoring: 0.840 / 0.502
    t = load_dataset("llmdrift-prime")
    acc = dict(zip(t.models, t.scores.mean(axis=0), strict=True))
    assert acc["gpt-4-0314"] == pytest.approx(0.840) and acc["gpt-4-0613"] == pytest.approx(0.502)


def test_tampered_bundled_file_is_refused(tmp_path, monkeypatch):
    shutil.copytree(_bundled.DATA_DIR, tmp_path / "data")
    monkeypatch.setattr(_bundled, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(_bundled, "INDEX", tmp_path / "data" / "datasets.json")
    f = tmp_path / "data" / "routellm-mt-bench.parquet"
    f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DataError, match="SHA-256"):
        load_dataset("routellm-mt-bench")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_export_round_trips(tmp_path, suffix):
    out = export_dataset("routellm-mt-bench", tmp_path / f"mt{suffix}")
    back = load_dataset(out)
    orig = load_dataset("routellm-mt-bench")
    assert back.query_ids == orig.query_ids and back.models == orig.models
    assert (back.scores == orig.scores).all()


@pytest.fixture(scope="module")
def prime_result():
    from tests.evaluation.eval_strategies import TaskRouter

    return evaluate("llmdrift-prime", strategies=[TaskRouter()], n_bootstrap=50)


def test_json_has_the_documented_schema(prime_result):
    d = json.loads(json.dumps(prime_result.to_json()))  # plain JSON, no NaN/inf
    assert isinstance(d["dataset"], str) and d["dataset"] == "llmdrift-prime"
    assert d["n_train_queries"] + d["n_test_queries"] == 1000
    assert set(d["best_model"]) >= {"model", "quality", "cost_usd"}
    assert all(set(m) >= {"model", "quality", "cost_usd"} for m in d["models"])
    assert set(d["oracle"]) >= {"quality", "cost_usd"}
    kinds = {s["name"]: s["kind"] for s in d["strategies"]}
    assert kinds["task-router"] == "router" and kinds["oracle"] == "baseline"
    assert {f"model:{m['model']}" for m in d["models"]} <= set(kinds)
    for s in d["strategies"]:
        assert set(s) >= {"name", "kind", "curve", "cost_ratio_at_best_quality",
                          "quality_at_best_cost", "auc"}
        assert all(set(p) >= {"cost_usd", "quality", "setting"} for p in s["curve"])
    assert d["versions"]["ponder"]
    assert [t["task"] for t in d["tasks"]] == ["composite", "prime"]
    assert sum(t["n_queries"] for t in d["tasks"]) == d["n_test_queries"]


def test_html_is_self_contained_and_complete(prime_result):
    page = prime_result.to_html()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "<script" not in page.lower()
    refs = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert refs == []  # nothing to fetch: opens offline
    for section in ("Cost–quality plane", "Strategies", "Single models", "Per task",
                    "Data and versions", "Pareto frontier", "task-router", "gpt-4-0314"):
        assert section in page
    assert "[" in page and "95%" in page  # intervals shown


def test_markdown_tables(prime_result):
    md = prime_result.to_markdown()
    assert md.startswith("# ponder evaluation: llmdrift-prime")
    assert "| strategy | kind |" in md and "| model | quality |" in md
    best = prime_result.to_json()["best_model"]
    assert f"Best single model: {best['model']}, quality {best['quality']:.3f}" in md


def test_report_renders_without_strategies_or_tasks(hand_df):
    res = evaluate(hand_df.drop(columns="task"), strategies=[], n_bootstrap=0)
    assert "No routing strategies are registered" in res.to_markdown()
    assert "Per task" not in res.to_html()
    assert isinstance(pd.DataFrame(res.to_json()["models"]), pd.DataFrame)
