"""Records, one per (query, model, sample): the progress file they are appended to, and the
output table rebuilt from them (:func:`build_table`)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._batch import error_text
from .._exceptions import DataError
from .._jsonl import iter_log
from .._types import Completion
from ._input import CollectPrompt, blank
from ._plan import Job, Key

if TYPE_CHECKING:
    import pandas as pd


log = logging.getLogger("ponder.collect")
COLUMNS = ("query_id", "query", "model", "response", "tool_calls", "score", "cost_usd", "input_tokens",
           "output_tokens", "latency_s", "task", "reference", "tests", "response_format", "samples",
           "sample_tool_calls", "logprob_mean", "logprob_min", "logprob_tokens", "error")
_LOGPROBS = ("logprob_mean", "logprob_min", "logprob_tokens")


def _sample(qid: str, model: str, index: int, **fields: Any) -> dict[str, Any]:
    return {"id": json.dumps([qid, model, index]), "query_id": qid, "model": model, "sample": index,
            **fields}


def answer_records(job: Job, c: Completion) -> list[dict[str, Any]]:
    """One record per sample answered; the first carries the call's cost and tokens, the others
    zeros (so a row's sums are what the call was billed)."""
    recs = []
    for pos, (index, choice) in enumerate(zip(job.samples, c.answers(), strict=False)):
        first = pos == 0
        lp = c.logprobs if first else None
        recs.append(_sample(
            job.prompt.id, job.model, index, response=choice.text,
            tool_calls=[dict(call) for call in choice.tool_calls] or None,
            # the answer's cost, also when the cache served it for free this time
            cost_usd=(c.saved_usd if c.cached else c.cost_usd) if first else 0.0,
            paid_usd=c.cost_usd if first else 0.0, cost_estimated=c.cost_estimated,
            input_tokens=c.usage.input_tokens if first else 0,
            output_tokens=c.usage.output_tokens if first else 0,
            latency_s=round(c.latency_s, 6), cached=c.cached,
            logprob_mean=lp.mean if lp else None, logprob_min=lp.min if lp else None,
            logprob_tokens=lp.tokens if lp else None, error=None))
    return recs


def error_records(job: Job, indices: Iterable[int], exc: BaseException) -> list[dict[str, Any]]:
    return [_sample(job.prompt.id, job.model, i, response=None, cost_usd=0.0, paid_usd=0.0,
                    error=error_text(exc), error_type=type(exc).__name__) for i in indices]


def num(v: Any, default: float = 0.0) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(f) else f


def _row_samples(rec: dict[str, Any]) -> list[str]:
    raw = rec.get("samples")
    if isinstance(raw, str) and raw.strip().startswith("["):
        with suppress(json.JSONDecodeError):
            items = json.loads(raw)
            if isinstance(items, list) and items:
                return [str(t) for t in items]
    resp = rec.get("response")
    return ["" if blank(resp) else str(resp)]


def _row_tool_calls(rec: dict[str, Any], n: int) -> list[list[dict[str, Any]] | None]:
    """Each of ``n`` samples' tool calls from an output row (checked when the table was read)."""
    from ..evaluation._table import parse_sample_tool_calls, parse_tool_calls  # pandas: when read
    each = parse_sample_tool_calls(rec.get("sample_tool_calls"))
    calls = [list(c) for c in each] if each is not None else [list(parse_tool_calls(rec.get("tool_calls")))]
    return [(calls[i] or None) if i < len(calls) else None for i in range(n)]


def _from_output_row(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """An error-free output row as sample records (so a rerun with more samples can extend it)."""
    qid, model = str(rec["query_id"]), str(rec["model"])
    texts = _row_samples(rec)
    calls = _row_tool_calls(rec, len(texts))
    lp = {k: None if blank(rec.get(k)) else num(rec.get(k)) for k in _LOGPROBS}
    if lp["logprob_tokens"] is not None:
        lp["logprob_tokens"] = int(lp["logprob_tokens"])
    first = {"cost_usd": num(rec.get("cost_usd")), **lp,
             "input_tokens": int(num(rec.get("input_tokens"))),
             "output_tokens": int(num(rec.get("output_tokens")))}
    rest = {"cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0, **dict.fromkeys(_LOGPROBS)}
    return [_sample(qid, model, i, response=text, tool_calls=calls[i], paid_usd=0.0,
                    latency_s=num(rec.get("latency_s")), **(rest if i else first), error=None)
            for i, text in enumerate(texts)]


def table_row(prompt: CollectPrompt, model: str, recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One outcome-table row from a (query, model)'s sample records; ``score`` stays NaN."""
    recs = sorted(recs, key=lambda r: int(r["sample"]))
    ok = [r for r in recs if r.get("error") is None]
    head = ok[0] if ok else None
    err = next((r["error"] for r in recs if r.get("error") is not None), None)
    calls = [r.get("tool_calls") or [] for r in ok]
    out: dict[str, Any] = {
        "query_id": prompt.id, "query": prompt.query, "model": model,
        "response": head["response"] if head else "", "score": math.nan,
        "cost_usd": sum(num(r.get("cost_usd")) for r in ok),
        "input_tokens": sum(int(num(r.get("input_tokens"))) for r in ok),
        "output_tokens": sum(int(num(r.get("output_tokens"))) for r in ok),
        "latency_s": num(head.get("latency_s")) if head else math.nan,
        "task": prompt.task, "reference": prompt.reference, "tests": prompt.tests,
        "samples": json.dumps([r["response"] for r in ok], ensure_ascii=False),
        **{k: head.get(k) if head else None for k in _LOGPROBS}, "error": err,
    }
    if prompt.request.tools or any(calls):  # the answers' tool calls, as JSON, beside their text
        out["tool_calls"] = json.dumps(calls[0], ensure_ascii=False) if head else None
        if len(ok) > 1:
            out["sample_tool_calls"] = json.dumps(calls, ensure_ascii=False)
    if prompt.request.response_format:  # what `ponder grade --grader json` checks the answer against
        out["response_format"] = json.dumps(prompt.request.response_format, ensure_ascii=False)
    return out


def progress_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".progress.jsonl")


def _record_problem(rec: Any) -> str | None:
    """Why a progress record cannot stand for an answered (or failed) sample, or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    for name in ("query_id", "model"):
        if not isinstance(rec.get(name), str) or not rec[name]:
            return f"{name!r} is missing or not a string"
    sample = rec.get("sample")
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        return "'sample' is missing or not a non-negative integer"
    if rec.get("error") is not None:
        return None if isinstance(rec["error"], str) else "'error' is not a string"
    if not isinstance(rec.get("response"), str):
        return "it has neither a 'response' text nor an 'error'"
    calls = rec.get("tool_calls")
    if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
        return "'tool_calls' is not a list of objects"
    return None


def read_progress(path: Path) -> list[dict[str, Any]]:
    """The last usable record per (query, model, sample) of a progress file. A torn line (a run
    killed mid-write) or an incomplete record is dropped with a warning: its sample is asked
    again, and the next run rewrites the file without it."""
    records: dict[Key, dict[str, Any]] = {}
    for line, rec in iter_log(path):
        problem = "not a complete JSON record" if rec is None else _record_problem(rec)
        if problem is not None:
            log.warning("%s, line %d: progress record dropped (%s); its answer will be asked again",
                        path, line, problem)
            continue
        records[(rec["query_id"], rec["model"], rec["sample"])] = rec
    return list(records.values())


def read_collected(output: Path) -> tuple[pd.DataFrame | None, dict[Key, dict[str, Any]],
                                          list[dict[str, Any]]]:
    """What earlier runs left: the output table (or None), the sample records of its error-free
    rows overlaid with the progress file's, and the progress file's records."""
    from ..evaluation._table import check_tool_calls, read_frame, table_format  # pandas: when used

    table_format(output)  # an unknown extension fails before anything is paid
    existing = read_frame(output) if output.exists() else None
    pool: dict[Key, dict[str, Any]] = {}
    if existing is not None:
        missing = [c for c in ("query_id", "model") if c not in existing.columns]
        if missing:
            raise DataError(f"is not a collect output (no {', '.join(missing)} column); choose another "
                            "--output", file=str(output))
        check_tool_calls(existing, str(output))  # the calls kept come back as sample records
        existing[["query_id", "model"]] = existing[["query_id", "model"]].astype(str)
        failed = existing["error"].notna() if "error" in existing.columns else None
        for i, rec in enumerate(existing.to_dict("records")):
            if failed is None or not failed.iloc[i]:
                for r in _from_output_row(rec):
                    pool[(r["query_id"], r["model"], int(r["sample"]))] = r
    sidecar = read_progress(progress_path(output))
    for r in sidecar:
        pool[(r["query_id"], r["model"], r["sample"])] = r
    return existing, pool, sidecar


def build_table(prompts: Sequence[CollectPrompt], models: Sequence[str], existing: pd.DataFrame | None,
                pool: dict[Key, dict[str, Any]], touched: set[tuple[str, str]]) -> pd.DataFrame:
    """The existing output's rows that nothing changed (grades included), and a fresh row for
    every (query, model) with new sample records."""
    import pandas as pd

    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (qid, model, _), rec in pool.items():
        by_pair.setdefault((qid, model), []).append(rec)
    old = {(str(rec["query_id"]), str(rec["model"])): rec
           for rec in ([] if existing is None else existing.to_dict("records"))}
    rows: list[dict[str, Any]] = []
    for p in prompts:
        for m in models:
            if (p.id, m) in touched and (p.id, m) in by_pair:
                rows.append(table_row(p, m, by_pair[(p.id, m)]))
            elif (p.id, m) in old:
                rows.append(old[(p.id, m)])
    wanted = {(p.id, m) for p in prompts for m in models}
    rows.extend(rec for pair, rec in old.items() if pair not in wanted)
    df = pd.DataFrame(rows)
    cols = [c for c in COLUMNS if c in df.columns or c in ("score", "samples", "error")]
    extra = [c for c in df.columns if c not in cols]
    df = df.reindex(columns=cols + extra)
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    return df

