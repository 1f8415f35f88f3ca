"""Outcome tables for the cascade benchmarks, built from /work/shared/data (never shipped)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pandas as pd

from ponder.evaluation import OutcomeTable, read_outcomes
from ponder.evaluation._loaders import score_prime  # the bundled table's rule

DATA = Path(os.environ.get("PONDER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RB_MODELS = (
    "WizardLM/WizardLM-13B-V1.2", "claude-instant-v1", "claude-v1", "claude-v2",
    "gpt-3.5-turbo-1106", "gpt-4-1106-preview", "meta/code-llama-instruct-34b-chat",
    "meta/llama-2-70b-chat", "mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat",
    "zero-one-ai/Yi-34B-Chat",
)


def _unlist(raw: object) -> str:
    try:
        val = ast.literal_eval(str(raw))
    except (ValueError, SyntaxError):
        return str(raw)
    if isinstance(val, (list, tuple)):
        return "\n".join(str(v) for v in val)
    return str(val)


def routerbench() -> OutcomeTable:
    """RouterBench subset as an outcome table: RouterDC's split, 14 NaN duplicate rows dropped."""
    df = pd.read_csv(DATA / "routerbench-subset" / "routerbench_0shot_subset.csv")
    df = df.dropna(subset=list(RB_MODELS)).reset_index(drop=True)
    frame = df
    out = []
    prompts = [_unlist(p) for p in frame["prompt"]]
    for m in RB_MODELS:
        out.append(pd.DataFrame({
            "query_id": frame["sample_id"].astype(str), "query": prompts, "model": m,
            "score": frame[m].astype(float), "cost_usd": frame[f"{m}|total_cost"].astype(float),
            "response": [_unlist(x) for x in frame[f"{m}|model_response"]],
            "split": frame["routerdc_split"], "task": frame["eval_name"],
        }))
    return read_outcomes(pd.concat(out, ignore_index=True), name="routerbench-subset")


def prime() -> OutcomeTable:
    """LLMDrift PRIME: 1,000 queries × 4 OpenAI snapshots, scored by the last [Yes]/[No]."""
    df = pd.read_csv(DATA / "llmdrift" / "PRIME_FULL_EVAL.csv")
    out = pd.DataFrame({
        "query_id": df["id"].astype(str) if "id" in df.columns else df["query"],
        "query": df["query"].astype(str),
        "model": df["model"].str.replace("openaichat/", "", regex=False),
        "score": [score_prime(str(a), r) for a, r in zip(df["answer"], df["ref_answer"], strict=True)],
        "cost_usd": df["cost"].astype(float),
        "response": df["answer"].astype(str),
    })
    out = out.drop_duplicates(["query_id", "model"])
    return read_outcomes(out, name="llmdrift-prime")
