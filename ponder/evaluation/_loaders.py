"""Public per-query outcome formats → :class:`OutcomeTable`, keeping each source's own notion of
correctness where it has one; derived figures (scores, RouteLLM's costs) are documented."""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._answers import last_boxed, last_yes_no
from .._exceptions import DataError
from .._jsonl import iter_jsonl
from ._table import REQUIRED, OutcomeTable, shown

# RouteLLM publishes correctness only; costs are estimates at its paper's blended prices (Ong et
# al. 2024, §5) × (characters / 4) tokens.
ROUTELLM_PRICES_PER_MTOK = {
    "gpt-4-1106-preview": 24.7,
    "mistralai/Mixtral-8x7B-Instruct-v0.1": 0.24,
}
CHARS_PER_TOKEN = 4.0


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _read_csv(path: Path, **kw: Any) -> pd.DataFrame:
    if not path.exists():
        raise DataError("file not found", file=str(path))
    try:
        return pd.read_csv(path, **kw)
    except Exception as exc:  # noqa: BLE001 - pandas raises many types; the file is what matters
        raise DataError(f"cannot read CSV: {exc}", file=str(path)) from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [{**obj, "__row__": i} for i, obj in iter_jsonl(path)]


def _need(df: pd.DataFrame, cols: Iterable[str], path: Path) -> None:
    for c in cols:
        if c not in df.columns:
            raise DataError("missing column", file=str(path), column=c)


def _refuse(bad: Any, path: Path, column: str, reason: str, values: pd.Series | None = None) -> None:
    """Name the first ``bad`` CSV line (the header is line 1) and, given ``values``, its cell."""
    idx = np.flatnonzero(np.asarray(bad))
    if idx.size:
        got = "" if values is None else f", got {shown(values.iloc[idx[0]])}"
        raise DataError(reason + got, file=str(path), row=int(idx[0]) + 2, column=column)


def _bool_scores(col: pd.Series, path: Path, column: str) -> np.ndarray:
    mapping = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}
    vals = col.astype(str).str.strip().str.lower().map(mapping)
    _refuse(vals.isna(), path, column, "expected True/False", col)
    return np.asarray(vals, dtype=float)


def _contaminated(path: Path, explicit: str | Path | None, stem: str) -> set[str]:
    """RouteLLM drops eval prompts that leaked into its training data; so do we by default."""
    cand = Path(explicit) if explicit else path.with_name(f"{stem}_contaminated_prompts.jsonl")
    if explicit is None and not cand.exists():
        cand = path.with_name("contaminated_prompts.jsonl")
    if not cand.exists():
        if explicit is not None:
            raise DataError("file not found", file=str(cand))
        return set()
    return {str(r.get("eval_prompt", "")) for r in _read_jsonl(cand)}


def _price(model: str, prices: dict[str, float] | None, path: Path) -> float:
    table = {**ROUTELLM_PRICES_PER_MTOK, **(prices or {})}
    if model not in table:
        raise DataError(f"no price for model {model!r}; pass prices={{model: usd_per_mtok}}",
                        file=str(path), column=model)
    return table[model] / 1e6


# ---- RouterBench -------------------------------------------------------------------------------
def _literal_list(text: str) -> list[Any] | None:
    if not text.startswith("["):
        return None
    try:
        val = ast.literal_eval(text)  # literal_eval parses literals only; it runs no code
    except (ValueError, SyntaxError):
        return None
    return val if isinstance(val, list) else None


def _routerbench_prompt(raw: Any) -> str:
    """RouterBench stores prompts as a stringified Python list of turns."""
    turns = _literal_list(str(raw))
    if turns is None or not all(isinstance(t, str) for t in turns):
        return str(raw)
    if len(turns) == 1:
        return str(turns[0])
    return json.dumps([{"role": "user", "content": t} for t in turns])


def _routerbench_response(raw: Any) -> str:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return ""
    val = _literal_list(str(raw))
    return str(raw) if val is None else "\n".join(str(v) for v in val)


def load_routerbench(path: str | Path, *, name: str | None = None) -> OutcomeTable:
    """RouterBench's wide CSV (``sample_id``, ``prompt``, ``eval_name``, ``<model>`` correctness,
    ``<model>|total_cost``, ``<model>|model_response``, ``split``/``routerdc_split``); rows with no
    correctness are dropped. Its licence is unclear: ponder never ships it, only reads your copy."""
    path = Path(path)
    df = _read_csv(path, dtype={"sample_id": str}, keep_default_na=True)
    _need(df, ("sample_id", "prompt"), path)
    models = [c[: -len("|total_cost")] for c in df.columns if c.endswith("|total_cost")]
    if not models:
        raise DataError("no '<model>|total_cost' columns: not a RouterBench wide CSV",
                        file=str(path))
    _need(df, models, path)
    scores = df[models].apply(pd.to_numeric, errors="coerce")
    for m in models:
        _refuse((scores[m].isna() & df[m].notna()) | (scores[m] < 0) | (scores[m] > 1), path, m,
                "correctness must be a number in [0, 1]", df[m])
    if df["sample_id"].duplicated().any():
        # RouterBench repeats a few sample ids with the models split across the rows (10 + 1):
        # merge them, first non-empty value per column.
        df = df.groupby("sample_id", sort=False, as_index=False).first()
        scores = df[models].apply(pd.to_numeric, errors="coerce")
    keep = scores.notna().any(axis=1)
    split_col = next((c for c in ("split", "routerdc_split") if c in df.columns), None)
    task_col = "eval_name" if "eval_name" in df.columns else None
    frames = []
    for m in models:
        sub = keep & scores[m].notna()
        cost = pd.to_numeric(df[f"{m}|total_cost"], errors="coerce")
        _refuse(sub & (cost.isna() | (cost < 0)), path, f"{m}|total_cost", "cost must be a number >= 0")
        f = pd.DataFrame({
            "query_id": df.loc[sub, "sample_id"].astype(str),
            "query": df.loc[sub, "prompt"].map(_routerbench_prompt),
            "model": m,
            "score": scores.loc[sub, m].astype(float),
            "cost_usd": cost[sub].astype(float),
        })
        resp = f"{m}|model_response"
        if resp in df.columns:
            f["response"] = df.loc[sub, resp].map(_routerbench_response)
        if split_col:
            f["split"] = df.loc[sub, split_col].astype(str)
        if task_col:
            f["task"] = df.loc[sub, task_col].astype(str)
        frames.append(f)
    out = pd.concat(frames, ignore_index=True)
    return OutcomeTable.read(out, name=name or path.stem)


# ---- RouteLLM ----------------------------------------------------------------------------------
def load_routellm_mmlu(path: str | Path, *, contaminated: str | Path | None = None,
                       prices: dict[str, float] | None = None, name: str | None = None
                       ) -> OutcomeTable:
    """RouteLLM's MMLU CSV(s), ``[subject,] prompt, <model>...`` booleans; cost estimated from the
    prompt plus one answer token (see ``ROUTELLM_PRICES_PER_MTOK``); contaminated prompts dropped."""
    path, df, keep = _routellm_csv(path, contaminated, "mmlu")
    models = [c for c in df.columns if c not in ("subject", "prompt")]
    if not models:
        raise DataError("no model columns besides 'prompt'", file=str(path))
    subject = df["subject"].astype(str) if "subject" in df.columns else pd.Series(
        [path.stem.removeprefix("mmlu_")] * len(df))
    ids = [f"mmlu/{s}/{i}" for i, s in enumerate(subject)]
    tokens = [_tokens(p) + 1 for p in df["prompt"]]
    frames = [_routellm_frame(df, path, m, ids, tokens, prices, task=subject)[keep]
              for m in models]
    return OutcomeTable.read(pd.concat(frames, ignore_index=True), name=name or "routellm-mmlu")


def load_routellm_gsm8k(path: str | Path, *, contaminated: str | Path | None = None,
                        prices: dict[str, float] | None = None, name: str | None = None
                        ) -> OutcomeTable:
    """RouteLLM's ``gsm8k_responses.csv`` (``prompt, <model> (bool), <model>_response``), graded by
    RouteLLM; costs estimated from the prompt and the response."""
    path, df, keep = _routellm_csv(path, contaminated, "gsm8k")
    models = [c for c in df.columns if c != "prompt" and not c.endswith("_response")]
    ids = [f"gsm8k/{i}" for i in range(len(df))]
    frames = []
    for m in models:
        resp = df[f"{m}_response"].astype(str) if f"{m}_response" in df.columns else pd.Series(
            [""] * len(df))
        tokens = [_tokens(p) + _tokens(r) for p, r in zip(df["prompt"], resp, strict=True)]
        frames.append(_routellm_frame(df, path, m, ids, tokens, prices, response=resp,
                                      task="gsm8k")[keep])
    return OutcomeTable.read(pd.concat(frames, ignore_index=True), name=name or "routellm-gsm8k")


def _routellm_csv(path: str | Path, contaminated: str | Path | None, stem: str
                  ) -> tuple[Path, pd.DataFrame, np.ndarray]:
    path = Path(path)
    df = _read_csv(path, keep_default_na=False)
    _need(df, ("prompt",), path)
    return path, df, ~df["prompt"].isin(_contaminated(path, contaminated, stem)).to_numpy()


def _routellm_frame(df: pd.DataFrame, path: Path, model: str, ids: list[str], tokens: list[int],
                    prices: dict[str, float] | None, **extra: Any) -> pd.DataFrame:
    price = _price(model, prices, path)
    return pd.DataFrame({"query_id": ids, "query": df["prompt"], "model": model,
                         "score": _bool_scores(df[model], path, model),
                         "cost_usd": [t * price for t in tokens], **extra})


def load_routellm_mtbench(judgements: str | Path, *, questions: str | Path | None = None,
                          contaminated: str | Path | None = None,
                          prices: dict[str, float] | None = None, name: str | None = None
                          ) -> OutcomeTable:
    """FastChat single-grade MT-Bench judgments: score = mean over turns of judge score / 10; the
    query is the first turn (RouteLLM routes on it), from ``questions`` (found next to the
    judgments if not given); cost counts the longest judge prompt, which holds the conversation."""
    path = Path(judgements)
    rows = _read_jsonl(path)
    qpath = Path(questions) if questions else next(
        (path.with_name(c) for c in ("mt_bench_question.jsonl", "question.jsonl")
         if path.with_name(c).exists()), None)
    qinfo = {str(r.get("question_id")): r for r in (_read_jsonl(qpath) if qpath else [])}
    drop = _contaminated(path, contaminated, "mt_bench")
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        for key in ("question_id", "model", "score"):
            if key not in r:
                raise DataError("missing key", file=str(path), row=r["__row__"], column=key)
        score = r["score"]
        if not isinstance(score, (int, float)) or not 1 <= score <= 10:
            raise DataError(f"judge score must be in [1, 10], got {score!r}", file=str(path),
                            row=r["__row__"], column="score")
        k = (str(r["question_id"]), str(r["model"]))
        a = acc.setdefault(k, {"scores": [], "chars": 0})
        a["scores"].append(float(score))
        a["chars"] = max(a["chars"], len(str(r.get("user_prompt", ""))))
    out = []
    for (qid, model), a in acc.items():
        q = qinfo.get(qid, {})
        turns = q.get("turns") or []
        if any(t in drop for t in turns):
            continue
        out.append({"query_id": f"mt_bench/{qid}", "query": turns[0] if turns else f"MT-Bench {qid}",
                    "model": model, "score": float(np.mean(a["scores"])) / 10.0,
                    "cost_usd": _tokens("x" * a["chars"]) * _price(model, prices, path),
                    "task": str(q.get("category", "mt_bench"))})
    if not out:
        raise DataError("no judgments left", file=str(path))
    return OutcomeTable.read(pd.DataFrame(out), name=name or "routellm-mt-bench")


# ---- FrugalGPT / LLMDrift generation caches ----------------------------------------------------
def score_prime(answer: str, reference: str) -> float:
    """PRIME: the last ``[Yes]``/``[No]`` in the answer must match the reference (yes/no)."""
    return float(last_yes_no(answer) == str(reference).strip().lower())


def _norm(s: str) -> str:
    s = str(s).strip().strip("$").strip()
    s = re.sub(r"\\(?:text|mathrm)\{([^}]*)\}", r"\1", s)
    s = s.replace("\\!", "").replace(" ", "").replace(",", "").rstrip(".")
    while s.startswith("{") and s.endswith("}"):
        s = s[1:-1]
    return s.lower()


def score_boxed(answer: str, reference: str) -> float:
    r"""The last ``\boxed{}`` of the answer equals the reference (its last ``\boxed{}`` if any)."""
    got = last_boxed(answer)
    if got is None:
        return 0.0
    ref = last_boxed(reference)
    return float(_norm(got) == _norm(ref if ref is not None else reference))


def score_exact(answer: str, reference: str) -> float:
    return float(_norm(answer) == _norm(reference))


SCORING_RULES: dict[str, Callable[[str, str], float]] = {
    "prime": score_prime,
    "boxed": score_boxed,
    "exact": score_exact,
}

_ALIASES = {
    "query_id": ("id", "_id", "query_id"),
    "model": ("model", "service", "service_id"),
    "query": ("query", "prompt", "question"),
    "answer": ("answer", "completion", "response"),
    "reference": ("ref_answer", "reference", "ground_truth", "gold"),
    "cost": ("cost", "cost_usd"),
}


def _col(df: pd.DataFrame, key: str, path: Path) -> str:
    for c in _ALIASES[key]:
        if c in df.columns:
            return c
    raise DataError(f"missing column (any of {', '.join(_ALIASES[key])})", file=str(path),
                    column=_ALIASES[key][0])


def load_generation_cache(path: str | Path, *, scoring: str | Callable[[str, str], float] = "auto",
                          name: str | None = None) -> OutcomeTable:
    """A FrugalGPT/LLMDrift generation cache, one row per generation (columns: see ``_ALIASES``,
    and optionally latency, answer_token, dataset). ``scoring``: a rule name, a callable ``(answer,
    reference) -> [0, 1]``, or ``auto``: ``prime`` for PRIME, ``boxed`` for ``\\boxed{}`` answers,
    else ``exact``."""
    path = Path(path)
    df = _read_csv(path, keep_default_na=False)
    c_id, c_model, c_query = (_col(df, k, path) for k in ("query_id", "model", "query"))
    c_ans, c_ref, c_cost = (_col(df, k, path) for k in ("answer", "reference", "cost"))
    if scoring == "auto":
        ds = set(df["dataset"].astype(str).str.lower()) if "dataset" in df.columns else set()
        scoring = ("prime" if "prime" in ds or "prime" in path.name.lower()
                   else "boxed" if df[c_ans].astype(str).str.contains("\\boxed", regex=False).any()
                   else "exact")
    if not callable(scoring) and scoring not in SCORING_RULES:
        raise DataError(f"unknown scoring rule {scoring!r}; use {', '.join(SCORING_RULES)}",
                        file=str(path))
    rule = scoring if callable(scoring) else SCORING_RULES[scoring]
    cost = pd.to_numeric(df[c_cost], errors="coerce")
    _refuse(cost.isna() | (cost < 0), path, c_cost, "cost must be a number >= 0", df[c_cost])
    model = df[c_model].astype(str).str.split("/").str[-1]  # openaichat/gpt-4-0314 → gpt-4-0314
    prefix = df["dataset"].astype(str) + "/" if "dataset" in df.columns else ""
    out = pd.DataFrame({
        "query_id": prefix + df[c_id].astype(str),
        "query": df[c_query].astype(str),
        "model": model,
        "score": [rule(str(a), str(r)) for a, r in zip(df[c_ans], df[c_ref], strict=True)],
        "cost_usd": cost.astype(float),
        "response": df[c_ans].astype(str),
    })
    for src, col in (("answer_token", "output_tokens"), ("latency", "latency_s")):
        if src in df.columns:
            out[col] = pd.to_numeric(df[src], errors="coerce")
    if "dataset" in df.columns:
        out["task"] = df["dataset"].astype(str)
    return OutcomeTable.read(out, name=name or path.stem)


# ---- RouterArena -------------------------------------------------------------------------------
def load_routerarena(paths: str | Path | Iterable[str | Path], *, name: str | None = None
                     ) -> OutcomeTable:
    """RouterArena's ``cached_results/<model>.jsonl`` files (a folder or a list): score and USD cost
    from each record's ``evaluation_result``; failed calls (no evaluation) are skipped."""
    if isinstance(paths, (str, Path)):
        p = Path(paths)
        files = sorted(p.glob("*.jsonl")) + sorted(p.glob("*.jsonl.gz")) if p.is_dir() else [p]
    else:
        files = [Path(x) for x in paths]
    if not files:
        raise DataError("no .jsonl files", file=str(paths))
    out = []
    for f in files:
        model_default = f.name.split(".jsonl")[0]
        for r in _read_jsonl(f):
            ev = r.get("evaluation_result")
            if not r.get("success", True) or not isinstance(ev, dict):
                continue
            gid = r.get("global_index")
            if gid is None:
                raise DataError("missing key", file=str(f), row=r["__row__"], column="global_index")
            try:
                score, cost = float(ev["score"]), float(ev["inference_cost"])
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"bad evaluation_result: {exc}", file=str(f), row=r["__row__"],
                                column="evaluation_result") from None
            usage = r.get("token_usage") or {}
            out.append({
                "query_id": str(gid), "query": str(r.get("question", "")),
                # METEOR with a fragmentation penalty can dip just below 0: clip to the scale.
                "model": str(r.get("llm_selected") or model_default),
                "score": min(1.0, max(0.0, score)),
                "cost_usd": cost, "response": str(r.get("generated_answer") or ""),
                "input_tokens": usage.get("input_tokens"), "output_tokens": usage.get("output_tokens"),
                "task": str(gid).split("_", 1)[0],  # MMLUPro_law_12 → MMLUPro
            })
    if not out:
        raise DataError("no successful records", file=str(files[0]))
    return OutcomeTable.read(pd.DataFrame(out), name=name or "routerarena")


# ---- format sniffing ---------------------------------------------------------------------------
def load_path(path: str | Path, *, graded: bool = True) -> OutcomeTable:
    """Any supported file, format sniffed; ``graded=False`` lets an outcome table have empty scores."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", file=str(p))
    if p.is_dir():
        if any(p.glob("*.jsonl")):
            return load_routerarena(p)
        raise DataError("a folder must hold RouterArena cached_results *.jsonl files", file=str(p))
    suffixes = "".join(p.suffixes).lower()
    if suffixes.endswith((".csv", ".csv.gz")):
        cols = list(_read_csv(p, nrows=0).columns)
        if all(c in cols for c in REQUIRED):
            return OutcomeTable.read(p, graded=graded)
        if any(c.endswith("|total_cost") for c in cols):
            return load_routerbench(p)
        if "prompt" in cols and any(c.endswith("_response") for c in cols):
            return load_routellm_gsm8k(p)
        if "prompt" in cols and any(c in ROUTELLM_PRICES_PER_MTOK for c in cols):
            return load_routellm_mmlu(p)
        if "model" in cols and any(c in cols for c in _ALIASES["reference"]):
            return load_generation_cache(p)
        return OutcomeTable.read(p, graded=graded)  # let the validator say which columns are missing
    if suffixes.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        keys = set(next(iter_jsonl(p), (0, {}))[1])  # the first record's
        if {"global_index", "evaluation_result"} <= keys:
            return load_routerarena(p)
        if {"judgment", "score", "question_id"} <= keys:
            return load_routellm_mtbench(p)
    return OutcomeTable.read(p, graded=graded)
