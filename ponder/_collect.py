"""Collect an outcome table from your own prompts: every model answers every prompt, resumably.

One decision core and thin loops around it:

* :func:`read_prompts` validates the whole input first (a bad row fails before anything is paid);
* :func:`plan_jobs` is pure: given the prompts, the models and the (query, model, sample) triples
  already answered, it says which calls are missing (one call per model and prompt where the
  provider answers ``n`` samples at once, else one call per sample);
* :func:`acollect` runs the jobs N at a time (or through the providers' batch APIs), and
  :func:`collect` is ``asyncio.run`` around it.

Resume: each answered sample is appended to ``<output>.progress.jsonl`` as soon as it arrives
(one flushed JSON line, the same writer as ``ponder run``), and the output table is rewritten from
it when the run ends. A rerun skips every triple found in the output table or the progress file,
so nothing is written or paid twice; answers that were paid but not yet written come back free
from the completion cache (sampled ones only with ``cache_sampled``). Failed calls are recorded
with their error and retried by the next run. The progress file is removed once the output table
holds every answer without errors. A progress record that cannot be used (a torn line, missing
fields) is dropped with a warning naming its line, and its answer is asked again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ._batch import _Writer
from ._exceptions import DataError, PonderError
from ._jsonl import iter_jsonl, iter_log
from ._pricing import estimate_tokens
from ._types import ChatRequest, Completion, Usage
from .evaluation._table import check_tool_calls, parse_sample_tool_calls, parse_tool_calls
from .providers._replay import query_key

if TYPE_CHECKING:
    import pandas as pd

    from ._client import Client
    from .evaluation import OutcomeTable

log = logging.getLogger("ponder.collect")

DEFAULT_OUTPUT_GUESS = 256  # tokens per answer assumed by estimates when nothing better is known
_MESSAGE_OVERHEAD = 4  # tokens per chat message beyond its text (role and separators), roughly
COLUMNS = ("query_id", "query", "model", "response", "tool_calls", "score", "cost_usd", "input_tokens",
           "output_tokens", "latency_s", "task", "reference", "tests", "response_format", "samples",
           "sample_tool_calls", "logprob_mean", "logprob_min", "logprob_tokens", "error")

Key = tuple[str, str, int]  # (query_id, model, sample)


@dataclass(frozen=True)
class CollectPrompt:
    """One validated input row."""

    id: str
    request: ChatRequest
    query: str
    reference: str | None = None
    task: str | None = None
    tests: str | None = None
    row: int = 0


@dataclass(frozen=True)
class Job:
    """One call to make: ``model`` answers ``prompt`` for these sample indices (``n`` at once
    when there are several)."""

    prompt: CollectPrompt
    model: str
    samples: tuple[int, ...]

    @property
    def id(self) -> str:
        """A stable id within what batch APIs accept (Anthropic: ``[a-zA-Z0-9_-]{1,64}``)."""
        key = json.dumps([self.prompt.id, self.model, list(self.samples)], ensure_ascii=False)
        return "collect-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


@dataclass
class CollectSummary:
    """What a run did, in calls (jobs). ``cost_usd`` is what this run paid."""

    total: int = 0  # calls planned
    answers: int = 0  # answers (samples) planned
    skipped: int = 0  # answers already in the output or progress file
    done: int = 0
    failed: int = 0
    cached: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    elapsed_s: float = 0.0
    stopped: str | None = None
    errors: dict[str, int] = field(default_factory=dict)
    output: str | None = None

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed


@dataclass(frozen=True)
class CollectEstimate:
    """The expected cost of one model's missing answers; output length is a guess."""

    model: str
    calls: int
    answers: int
    input_tokens: int
    output_tokens: int
    output_guess: int  # tokens per answer assumed
    guess_source: str  # "--max-tokens", "measured mean of N answers", "default"
    cost_usd: float | None  # None when the price table has no price for the model


# --- input -------------------------------------------------------------------------------------
def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _text(v: Any, path: Path, row: int, column: str) -> str | None:
    if _blank(v):
        return None
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return str(v)
    raise DataError(f"must be a string (got {type(v).__name__})", file=str(path), row=row, column=column)


def _listish(v: Any) -> list[Any] | None:
    if isinstance(v, list):
        return v
    tolist = getattr(v, "tolist", None)  # numpy arrays from Parquet
    return tolist() if callable(tolist) and not isinstance(v, str) else None


def _native(v: Any) -> Any:
    """A cell's value with numpy arrays (Parquet's lists) turned into lists, all the way down."""
    if isinstance(v, dict):
        return {k: _native(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)) or getattr(v, "ndim", 0) > 0:
        return [_native(x) for x in v]
    return v


def _json_value(obj: dict[str, Any], column: str, path: Path, row: int, *, words: bool = False) -> Any:
    """A cell that holds JSON (a value in JSONL and Parquet, JSON text in a CSV), or None when
    blank. With ``words``, a string that is not a JSON object is a word (``tool_choice: auto``)."""
    v = obj.get(column)
    if _blank(v):
        return None
    if isinstance(v, str):
        if words and not v.strip().startswith("{"):
            return v.strip()
        try:
            return _native(json.loads(v))
        except json.JSONDecodeError as exc:
            raise DataError(f"not JSON: {exc.msg}", file=str(path), row=row, column=column) from None
    return _native(v)


def _schema_problem(schema: Any) -> str | None:
    """Why ``schema`` is not a valid JSON Schema, or None."""
    import jsonschema

    if not isinstance(schema, dict):
        return "must be a JSON Schema object"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"is not a valid JSON Schema: {exc.message}"
    return None


_TOOL_CHOICES = ("auto", "none", "required")
_FORMATS = ("text", "json_object", "json_schema")


def _request_fields(obj: dict[str, Any], path: Path, row: int) -> dict[str, Any]:
    """The row's ``tools``, ``tool_choice`` and ``response_format``, checked as OpenAI checks them
    (a bad one fails the row before anything is paid, not every call to every model)."""
    def bad(column: str, reason: str) -> DataError:
        return DataError(reason, file=str(path), row=row, column=column)

    out: dict[str, Any] = {}
    tools = _json_value(obj, "tools", path, row)
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            raise bad("tools", "must be a non-empty list of {type: function, function: {name, parameters}}")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or tool.get("type", "function") != "function":
                raise bad("tools", f"tools[{i}] must be {{type: function, function: {{name, parameters}}}}")
            if not isinstance(fn.get("name"), str) or not fn["name"]:
                raise bad("tools", f"tools[{i}].function.name must be a non-empty string")
            if "parameters" in fn and (problem := _schema_problem(fn["parameters"])):
                raise bad("tools", f"tools[{i}].function.parameters {problem}")
        out["tools"] = tools
    choice = _json_value(obj, "tool_choice", path, row, words=True)
    if choice is not None:
        names = [t["function"]["name"] for t in tools or []]
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
            if wanted is None:
                raise bad("tool_choice", "must be auto, none, required or {type: function, function: {name}}")
            if wanted not in names:
                raise bad("tool_choice", f"names {wanted!r}, which is not in the row's tools")
        elif choice not in _TOOL_CHOICES:
            raise bad("tool_choice", "must be auto, none, required or {type: function, function: {name}}")
        if not names:
            raise bad("tool_choice", "needs the row's tools")
        out["tool_choice"] = choice
    fmt = _json_value(obj, "response_format", path, row)
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in _FORMATS:
            raise bad("response_format", "must be {type: text}, {type: json_object} or {type: json_schema, "
                                         "json_schema: {name, schema}}")
        if fmt["type"] == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise bad("response_format", "json_schema needs {name, schema}")
            if "schema" in spec and (problem := _schema_problem(spec["schema"])):
                raise bad("response_format", f"json_schema.schema {problem}")
        out["response_format"] = fmt
    return out


def _prompt(obj: dict[str, Any], path: Path, row: int) -> CollectPrompt:
    rid = _text(obj.get("id"), path, row, "id")
    if rid is None:
        raise DataError("is missing or empty", file=str(path), row=row, column="id")
    fields = _request_fields(obj, path, row)
    if not _blank(obj.get("messages")):
        column, value = "messages", obj["messages"]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise DataError(f"not a JSON list of messages: {exc.msg}", file=str(path), row=row,
                                column=column) from None
        msgs = _listish(value)
        if not msgs:
            raise DataError("must be a non-empty list of {role, content} messages", file=str(path),
                            row=row, column=column)
        source: str | list[Any] = _native(msgs)
    elif not _blank(obj.get("prompt")):
        column, value = "prompt", obj["prompt"]
        if not isinstance(value, str):
            raise DataError(f"must be a string (got {type(value).__name__})", file=str(path), row=row,
                            column="prompt")
        source = value
    else:
        raise DataError("needs a 'prompt' or 'messages' value", file=str(path), row=row,
                        column="prompt")
    try:
        request = ChatRequest.of(source, **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        where = str(first["loc"][0]) if first["loc"] else ""
        raise DataError(f"{first['msg']} (at {loc})", file=str(path), row=row,
                        column=where if where in fields else column) from None
    tests = obj.get("tests")
    if (items := _listish(tests)) is not None:
        if not all(isinstance(t, str) for t in items):
            raise DataError("must be a string or a list of strings", file=str(path), row=row, column="tests")
        tests = "\n".join(items)
    reference = _native(obj.get("reference"))
    if isinstance(reference, (dict, list)):
        # a structured reference (the tool calls expected, a JSON answer) is kept as JSON text
        reference = json.dumps(reference, ensure_ascii=False)
    return CollectPrompt(
        id=rid, request=request, query=query_key(request),
        reference=_text(reference, path, row, "reference"),
        task=_text(obj.get("task"), path, row, "task"),
        tests=_text(tests, path, row, "tests"), row=row,
    )


def _input_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        yield from iter_jsonl(path)
        return
    if not suffixes.endswith((".csv", ".csv.gz", ".parquet", ".pq")):
        raise DataError("unknown format; use .jsonl, .csv or .parquet", file=str(path))
    if not path.exists():
        raise DataError("file not found", file=str(path))
    import pandas as pd

    try:
        if ".csv" in suffixes:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types; the file is what matters
        raise DataError(f"cannot read: {exc}", file=str(path)) from None
    for i, rec in enumerate(df.to_dict("records"), start=1):  # 1-based data rows
        yield i, {str(k): v for k, v in rec.items()}


def read_prompts(path: str | Path) -> list[CollectPrompt]:
    """Every row of a JSONL, CSV or Parquet prompt file, validated before anything is paid.

    Rows need ``id`` and ``prompt`` (a string) or ``messages`` (a list of Chat Completions
    messages: content parts, assistant ``tool_calls``, ``tool`` results; in a CSV cell, that list
    as JSON); ``reference`` (text, or JSON such as the tool calls expected), ``task`` and
    ``tests`` are optional, and so are ``tools``, ``tool_choice`` and ``response_format``, which
    go into the request as OpenAI's API has them (JSON text in a CSV cell; ``tool_choice`` may be
    a bare ``auto``, ``none`` or ``required``).
    """
    path = Path(path)
    prompts: list[CollectPrompt] = []
    seen: dict[str, int] = {}
    for row, obj in _input_rows(path):
        p = _prompt(obj, path, row)
        if p.id in seen:
            raise DataError(f"duplicate id {p.id!r} (first in row {seen[p.id]})", file=str(path),
                            row=row, column="id")
        seen[p.id] = row
        prompts.append(p)
    if not prompts:
        raise DataError("no prompts", file=str(path))
    return prompts


# --- the plan (pure) ---------------------------------------------------------------------------
def plan_jobs(prompts: Sequence[CollectPrompt], models: Sequence[str], done: set[Key], *,
              samples: int = 1, supports_n: Callable[[str], bool] = lambda m: False) -> list[Job]:
    """The calls still to make: for every prompt and model, the sample indices not in ``done``.

    A model whose provider answers ``n`` samples in one request gets one job for all of them (the
    input is paid once); any other gets one job per sample.
    """
    jobs: list[Job] = []
    for model in models:
        batched = samples > 1 and supports_n(model)
        for p in prompts:
            missing = tuple(i for i in range(samples) if (p.id, model, i) not in done)
            if not missing:
                continue
            if batched:
                jobs.append(Job(p, model, missing))
            else:
                jobs.extend(Job(p, model, (i,)) for i in missing)
    return jobs


def job_request(job: Job, *, temperature: float | None, max_tokens: int | None,
                logprobs: bool, seeds: bool = True) -> ChatRequest:
    """The request for a job. Jobs whose first sample is not the first carry ``seed = index``
    (unless the prompt sets one, or the provider has no seeds: ``seeds=False``): their cache keys
    differ, and providers that honour seeds answer differently and reproducibly."""
    update: dict[str, Any] = {}
    if temperature is not None:
        update["temperature"] = temperature
    if max_tokens is not None:
        update["max_tokens"] = max_tokens
    if logprobs:
        update["logprobs"] = True
    if len(job.samples) > 1:
        update["n"] = len(job.samples)
    if seeds and job.samples[0] > 0 and job.prompt.request.seed is None:
        # also for a resumed n-job (samples 1..k): a server that ignores n answers it once, and
        # that answer must not be an unseeded draw that repeats sample 0
        update["seed"] = job.samples[0]
    # only what the row set: a field dumped as None would be sent upstream as null
    return ChatRequest.model_validate({**job.prompt.request.model_dump(exclude_unset=True), **update})


# --- records: one per (query, model, sample) ---------------------------------------------------
def _key_id(key: Key) -> str:
    return json.dumps(list(key))


def _answer_records(job: Job, c: Completion) -> list[dict[str, Any]]:
    """One record per sample the completion answered; the first carries the call's cost and
    tokens (so sums over a row's samples are what the call was billed), the others zeros."""
    recs = []
    for pos, (index, choice) in enumerate(zip(job.samples, c.answers(), strict=False)):
        first = pos == 0
        lp = c.logprobs if first else None
        recs.append({
            "id": _key_id((job.prompt.id, job.model, index)), "query_id": job.prompt.id,
            "model": job.model, "sample": index, "response": choice.text,
            "tool_calls": [dict(call) for call in choice.tool_calls] or None,
            # the answer's cost, also when the cache served it for free this time
            "cost_usd": (c.saved_usd if c.cached else c.cost_usd) if first else 0.0,
            "paid_usd": c.cost_usd if first else 0.0, "cost_estimated": c.cost_estimated,
            "input_tokens": c.usage.input_tokens if first else 0,
            "output_tokens": c.usage.output_tokens if first else 0,
            "latency_s": round(c.latency_s, 6), "cached": c.cached,
            "logprob_mean": lp.mean if lp else None, "logprob_min": lp.min if lp else None,
            "logprob_tokens": lp.tokens if lp else None, "error": None,
        })
    return recs


def _error_records(job: Job, indices: Iterable[int], exc: BaseException) -> list[dict[str, Any]]:
    msg = " ".join(str(exc).split())[:1000]
    return [{"id": _key_id((job.prompt.id, job.model, i)), "query_id": job.prompt.id,
             "model": job.model, "sample": i, "response": None, "cost_usd": 0.0, "paid_usd": 0.0,
             "error": msg, "error_type": type(exc).__name__} for i in indices]


def _num(v: Any, default: float = 0.0) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(f) else f


def _row_samples(rec: dict[str, Any]) -> list[str]:
    raw = rec.get("samples")
    if isinstance(raw, str) and raw.strip().startswith("["):
        try:
            items = json.loads(raw)
            if isinstance(items, list) and items:
                return [str(t) for t in items]
        except json.JSONDecodeError:
            pass
    resp = rec.get("response")
    return ["" if _blank(resp) else str(resp)]


def _row_tool_calls(rec: dict[str, Any], n: int) -> list[list[dict[str, Any]] | None]:
    """Each of ``n`` samples' tool calls from an output row's ``tool_calls`` and
    ``sample_tool_calls`` (checked when the table was read)."""
    each = parse_sample_tool_calls(rec.get("sample_tool_calls"))
    calls = [list(c) for c in each] if each is not None else [list(parse_tool_calls(rec.get("tool_calls")))]
    return [(calls[i] or None) if i < len(calls) else None for i in range(n)]


def _from_output_row(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """An error-free output row as sample records (so a rerun with more samples can extend it)."""
    qid, model = str(rec["query_id"]), str(rec["model"])
    texts = _row_samples(rec)
    calls = _row_tool_calls(rec, len(texts))
    out = []
    for i, text in enumerate(texts):
        first = i == 0
        out.append({
            "id": _key_id((qid, model, i)), "query_id": qid, "model": model, "sample": i,
            "response": text, "tool_calls": calls[i], "cost_usd": _num(rec.get("cost_usd")) if first else 0.0, "paid_usd": 0.0,
            "input_tokens": int(_num(rec.get("input_tokens"))) if first else 0,
            "output_tokens": int(_num(rec.get("output_tokens"))) if first else 0,
            "latency_s": _num(rec.get("latency_s")),
            "logprob_mean": None if not first or _blank(rec.get("logprob_mean")) else _num(rec.get("logprob_mean")),
            "logprob_min": None if not first or _blank(rec.get("logprob_min")) else _num(rec.get("logprob_min")),
            "logprob_tokens": None if not first or _blank(rec.get("logprob_tokens")) else int(_num(rec.get("logprob_tokens"))),
            "error": None,
        })
    return out


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
        "cost_usd": sum(_num(r.get("cost_usd")) for r in ok),
        "input_tokens": sum(int(_num(r.get("input_tokens"))) for r in ok),
        "output_tokens": sum(int(_num(r.get("output_tokens"))) for r in ok),
        "latency_s": _num(head.get("latency_s")) if head else math.nan,
        "task": prompt.task, "reference": prompt.reference, "tests": prompt.tests,
        "samples": json.dumps([r["response"] for r in ok], ensure_ascii=False),
        "logprob_mean": head.get("logprob_mean") if head else None,
        "logprob_min": head.get("logprob_min") if head else None,
        "logprob_tokens": head.get("logprob_tokens") if head else None,
        "error": err,
    }
    if prompt.request.tools or any(calls):  # the answers' tool calls, as JSON, beside their text
        out["tool_calls"] = json.dumps(calls[0], ensure_ascii=False) if head else None
        if len(ok) > 1:
            out["sample_tool_calls"] = json.dumps(calls, ensure_ascii=False)
    if prompt.request.response_format:  # what `ponder grade --grader json` checks the answer against
        out["response_format"] = json.dumps(prompt.request.response_format, ensure_ascii=False)
    return out


# --- the output table --------------------------------------------------------------------------
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
    """The last usable record per (query, model, sample) of a progress file.

    A line that is not a complete JSON record (a run killed mid-write), or a record without the
    fields a sample needs, is dropped with a warning naming the file and line: its sample counts
    as missing, so it is asked again, and the next run rewrites the file without it.
    """
    records: dict[Key, dict[str, Any]] = {}
    for line, rec in iter_log(path):
        problem = "not a complete JSON record" if rec is None else _record_problem(rec)
        if problem is not None:
            log.warning("%s, line %d: progress record dropped (%s); its answer will be asked again",
                        path, line, problem)
            continue
        records[(rec["query_id"], rec["model"], rec["sample"])] = rec
    return list(records.values())


def batch_state_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".batches.json")


def _format(path: Path) -> str:
    name = path.name.lower()
    for ext, fmt in ((".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv"), (".csv.gz", "csv"),
                     (".jsonl", "jsonl"), (".ndjson", "jsonl")):
        if name.endswith(ext):
            return fmt
    raise DataError("unknown output format; name it .parquet, .csv or .jsonl", file=str(path))


def _read_output(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    from .evaluation._table import _read_frame

    df = _read_frame(path)
    missing = [c for c in ("query_id", "model") if c not in df.columns]
    if missing:
        raise DataError(f"is not a collect output (no {', '.join(missing)} column); choose another "
                        "--output", file=str(path))
    check_tool_calls(df, str(path))  # the calls kept come back as sample records
    df["query_id"] = df["query_id"].astype(str)
    df["model"] = df["model"].astype(str)
    return df


def _write_output(df: pd.DataFrame, path: Path) -> None:
    fmt = _format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        df.to_parquet(tmp, index=False)
    elif fmt == "csv":
        df.to_csv(tmp, index=False, compression="gzip" if path.name.lower().endswith(".gz") else None)
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for rec in df.to_dict("records"):
                clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
                f.write(json.dumps(clean, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)  # atomic: the old table or the new one, never half of each


def build_table(prompts: Sequence[CollectPrompt], models: Sequence[str], existing: pd.DataFrame | None,
                pool: dict[Key, dict[str, Any]], touched: set[tuple[str, str]]) -> pd.DataFrame:
    """The output table: rows of the existing output that nothing changed (kept as they are,
    grades included), and a fresh row for every (query, model) with new sample records."""
    import pandas as pd

    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (qid, model, _), rec in pool.items():
        by_pair.setdefault((qid, model), []).append(rec)
    old: dict[tuple[str, str], dict[str, Any]] = {}
    if existing is not None:
        for rec in existing.to_dict("records"):
            old[(str(rec["query_id"]), str(rec["model"]))] = rec
    rows: list[dict[str, Any]] = []
    placed: set[tuple[str, str]] = set()
    for p in prompts:
        for m in models:
            pair = (p.id, m)
            if pair in touched and pair in by_pair:
                rows.append(table_row(p, m, by_pair[pair]))
            elif pair in old:
                rows.append(old[pair])
            else:
                continue
            placed.add(pair)
    rows.extend(rec for pair, rec in old.items() if pair not in placed)
    df = pd.DataFrame(rows)
    cols = [c for c in COLUMNS if c in df.columns or c in ("score", "samples", "error")]
    extra = [c for c in df.columns if c not in cols]
    df = df.reindex(columns=cols + extra)
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    return df


# --- estimates ---------------------------------------------------------------------------------
def _prompt_tokens(request: ChatRequest) -> int:
    tokens = sum(estimate_tokens(m.text) + _MESSAGE_OVERHEAD for m in request.messages)
    for extra in (request.tools, request.response_format):  # tool and schema definitions are input too
        if extra:
            tokens += estimate_tokens(json.dumps(extra, ensure_ascii=False))
    return tokens


def estimate_jobs(client: Client, jobs: Sequence[Job], models: Sequence[str], *,
                  max_tokens: int | None = None, pool: dict[Key, dict[str, Any]] | None = None,
                  provider_batch: bool = False) -> list[CollectEstimate]:
    """Expected cost per model of ``jobs`` from the prompts' token counts (~4 characters per
    token) and the price table. Output length is a guess: ``max_tokens`` when given, else the
    mean output of this model's answers so far, else ``DEFAULT_OUTPUT_GUESS``. With
    ``provider_batch``, at the provider's batch rate."""
    out = []
    for model in models:
        mine = [j for j in jobs if j.model == model]
        # sample records: the first of a call carries all its output tokens, so sum / count is
        # the mean per answer
        answered = [r for (_, m, _), r in (pool or {}).items() if m == model and r.get("error") is None]
        if max_tokens is not None:
            guess, source = max_tokens, "--max-tokens"
        elif answered:
            n_out = sum(int(_num(r.get("output_tokens"))) for r in answered)
            guess, source = max(1, round(n_out / len(answered))), f"measured mean of {len(answered)} answers"
        else:
            guess, source = DEFAULT_OUTPUT_GUESS, "default"
        spec = client.resolve(model)
        price = client.prices.lookup(spec.provider, spec.model)
        tin = sum(_prompt_tokens(j.prompt.request) for j in mine)
        answers = sum(len(j.samples) for j in mine)
        tout = guess * answers
        cost = None
        if price is not None:
            rate = client.prices.batch_rate(spec.provider) if provider_batch else 1.0
            cost = 0.0 if not mine else (price.cost(Usage(input_tokens=tin, output_tokens=tout), rate=rate)
                                         + price.per_request * (len(mine) - 1))
        out.append(CollectEstimate(model=model, calls=len(mine), answers=answers, input_tokens=tin,
                                   output_tokens=tout, output_guess=guess, guess_source=source,
                                   cost_usd=cost))
    return out


# --- state, and the thin loops around the plan -------------------------------------------------
PromptsIn = str | Path | Sequence[CollectPrompt | dict[str, Any]]


@dataclass
class _State:
    prompts: list[CollectPrompt]
    models: list[str]
    existing: pd.DataFrame | None
    pool: dict[Key, dict[str, Any]]  # sample records: from the output table, then the progress file
    sidecar: list[dict[str, Any]]  # the progress file's records, kept when it is rewritten
    touched: set[tuple[str, str]]  # (query, model) pairs with records in the progress file

    @property
    def done(self) -> set[Key]:
        return {k for k, r in self.pool.items() if r.get("error") is None}


def _as_prompts(prompts: PromptsIn) -> list[CollectPrompt]:
    if isinstance(prompts, (str, Path)):
        return read_prompts(prompts)
    out: list[CollectPrompt] = []
    seen: set[str] = set()
    for i, p in enumerate(prompts, start=1):
        cp = p if isinstance(p, CollectPrompt) else _prompt(dict(p), Path("<prompts>"), i)
        if cp.id in seen:
            raise DataError(f"duplicate id {cp.id!r}", file="<prompts>", row=i, column="id")
        seen.add(cp.id)
        out.append(cp)
    if not out:
        raise DataError("no prompts", file="<prompts>")
    return out


def _load(prompts: PromptsIn, models: Sequence[str], client: Client, output: str | Path | None) -> _State:
    if not models:
        raise PonderError("give at least one model (provider:model)")
    items = _as_prompts(prompts)
    specs = list(dict.fromkeys(str(client.resolve(m)) for m in models))
    existing, pool, sidecar = None, {}, []
    if output is not None:
        _format(Path(output))  # an unknown extension fails before anything is paid
        existing = _read_output(Path(output))
        if existing is not None:
            failed = existing["error"].notna() if "error" in existing.columns else None
            for i, rec in enumerate(existing.to_dict("records")):
                if failed is None or not failed.iloc[i]:
                    for r in _from_output_row(rec):
                        pool[(r["query_id"], r["model"], int(r["sample"]))] = r
        sidecar = read_progress(progress_path(output))
        for r in sidecar:
            pool[(r["query_id"], r["model"], r["sample"])] = r
    touched = {(r["query_id"], r["model"]) for r in sidecar}
    return _State(items, specs, existing, pool, sidecar, touched)


def honours(client: Client, model: str, field: str) -> bool:
    """Whether the model's provider honours request field ``field`` (see ``refuse_unsupported``)."""
    try:
        provider = client.provider(client.resolve(model).provider)
    except PonderError:
        return False
    accepts = getattr(getattr(provider, "provider", provider), "accepts", None)
    return accepts is None or field in accepts


def supports_n(client: Client, model: str) -> bool:
    """Whether the model's provider answers ``n`` samples in one request (OpenAI-compatible)."""
    try:
        provider = client.provider(client.resolve(model).provider)
    except PonderError:
        return False
    inner = getattr(provider, "provider", provider)  # under the CachedProvider wrapper
    return bool(getattr(inner, "supports_n", False))


def _plan(prompts: PromptsIn, models: Sequence[str], client: Client,
          output: str | Path | None, samples: int) -> tuple[_State, list[Job]]:
    """The inputs and what is already collected, and the calls still missing."""
    state = _load(prompts, models, client, output)
    jobs = plan_jobs(state.prompts, state.models, state.done, samples=samples,
                     supports_n=lambda m: supports_n(client, m))
    return state, jobs


def estimate_collect(prompts: PromptsIn, models: Sequence[str], *, client: Client | None = None,
                     output: str | Path | None = None, samples: int = 1,
                     max_tokens: int | None = None, provider_batch: bool = False) -> list[CollectEstimate]:
    """What :func:`collect` would spend on the answers still missing, per model; calls nothing."""
    from ._client import Client

    own = client is None
    client = client or Client()
    try:
        state, jobs = _plan(prompts, models, client, output, samples)
        return estimate_jobs(client, jobs, state.models, max_tokens=max_tokens, pool=state.pool,
                             provider_batch=provider_batch)
    finally:
        if own:
            client.close()


class _Run:
    """One collect run: records go to the pool and the progress file as they arrive."""

    def __init__(self, state: _State, summary: CollectSummary, writer: _Writer | None,
                 request_for: Callable[[Job], ChatRequest],
                 on_result: Callable[[CollectSummary], None] | None) -> None:
        self.state, self.summary, self.writer = state, summary, writer
        self.request_for, self.on_result = request_for, on_result
        self.start = time.perf_counter()

    def record(self, job: Job, result: Completion | BaseException) -> list[Job]:
        """Store a job's outcome; returns the single-sample jobs still owed when a provider
        answered fewer samples than ``n`` asked for."""
        s = self.summary
        if isinstance(result, Completion):
            recs = _answer_records(job, result)
            s.done += 1
            s.cost_usd += result.cost_usd
            s.saved_usd += result.saved_usd
            s.cached += int(result.cached)
            owed = [Job(job.prompt, job.model, (i,)) for i in job.samples[len(recs):]]
        else:
            recs = _error_records(job, job.samples, result)
            s.failed += 1
            s.errors[type(result).__name__] = s.errors.get(type(result).__name__, 0) + 1
            owed = []
        for r in recs:
            self.state.pool[(job.prompt.id, job.model, int(r["sample"]))] = r
            if self.writer is not None:
                self.writer.write(r)
        self.state.touched.add((job.prompt.id, job.model))
        s.total += len(owed)
        s.elapsed_s = time.perf_counter() - self.start
        if self.on_result is not None:
            self.on_result(s)
        return owed

    async def calls(self, client: Client, jobs: list[Job], concurrency: int, max_cost: float | None) -> None:
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for j in jobs:
            queue.put_nowait(j)

        async def worker() -> None:
            while True:
                if max_cost is not None and self.summary.cost_usd >= max_cost:
                    self.summary.stopped = f"budget of ${max_cost:g} reached"
                    return
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    result: Completion | BaseException = await client.acomplete(
                        self.request_for(job), model=job.model)
                except PonderError as exc:
                    result = exc
                for owed in self.record(job, result):
                    queue.put_nowait(owed)

        await asyncio.gather(*[worker() for _ in range(min(concurrency, max(1, len(jobs))))])

    async def provider_batch(self, client: Client, jobs: list[Job], state_path: Path, poll_s: float) -> None:
        from ._provider_batch import BatchItem, run_provider_batch

        items = [BatchItem(custom_id=j.id, model=j.model, request=self.request_for(j)) for j in jobs]

        def progress(done: int, total: int) -> None:
            if self.on_result is not None:
                self.on_result(self.summary)

        results = await asyncio.to_thread(run_provider_batch, client, items, state_path=state_path,
                                          poll_s=poll_s, on_progress=progress)
        for job in jobs:
            got = results.get(job.id)
            self.record(job, got if got is not None else
                        PonderError(f"the provider batch returned no result for {job.id}"))


async def acollect(
    prompts: PromptsIn,
    models: Sequence[str],
    *,
    client: Client | None = None,
    output: str | Path | None = None,
    concurrency: int = 8,
    samples: int = 1,
    temperature: float | None = None,
    max_tokens: int | None = None,
    logprobs: bool = False,
    max_cost: float | None = None,
    provider_batch: bool = False,
    batch_poll_s: float = 5.0,
    on_start: Callable[[CollectSummary], None] | None = None,
    on_result: Callable[[CollectSummary], None] | None = None,
) -> OutcomeTable:
    """Answer every prompt with every model (``samples`` answers each) into an ungraded outcome
    table; with ``output``, resumably (see the module docstring). ``max_cost`` stops starting
    calls once this run has paid that many USD; ``provider_batch`` sends the calls through the
    providers' batch APIs (priced at the batch rate) instead.

    A row's ``cost_usd``, ``input_tokens`` and ``output_tokens`` are what its answers were billed,
    all samples together (with ``n``, the input once); a cache hit keeps the answer's cost.
    ``response`` is the first sample, ``samples`` all of them (a JSON list), and the logprob
    columns describe ``response``. Where the prompt offers tools (or an answer calls one),
    ``tool_calls`` holds the first answer's calls as a JSON list in OpenAI's shape, and with
    several samples ``sample_tool_calls`` each sample's; a prompt's ``response_format`` is kept
    as JSON in ``response_format`` (what ``ponder grade --grader json`` checks against). A failed
    call leaves its message in ``error``."""
    from ._client import Client
    from .evaluation import OutcomeTable

    if concurrency < 1:
        raise PonderError("concurrency must be at least 1")
    if samples < 1:
        raise PonderError("samples must be at least 1")
    own = client is None
    client = client or Client()
    try:
        state, jobs = _plan(prompts, models, client, output, samples)
        planned = len(state.prompts) * len(state.models) * samples
        summary = CollectSummary(total=len(jobs), answers=sum(len(j.samples) for j in jobs),
                                 output=None if output is None else str(output))
        summary.skipped = planned - summary.answers
        if on_start is not None:
            on_start(summary)

        def request_for(job: Job) -> ChatRequest:
            return job_request(job, temperature=temperature, max_tokens=max_tokens, logprobs=logprobs,
                               seeds=honours(client, job.model, "seed"))

        writer = _Writer(progress_path(output), state.sidecar) if output is not None and jobs else None
        run = _Run(state, summary, writer, request_for, on_result)
        try:
            if provider_batch and jobs:
                est = sum(e.cost_usd or 0.0 for e in estimate_jobs(
                    client, jobs, state.models, max_tokens=max_tokens, pool=state.pool, provider_batch=True))
                if max_cost is not None and est > max_cost:
                    summary.stopped = (f"the estimated cost ${est:.4f} exceeds the budget of ${max_cost:g}; "
                                       "nothing was submitted")
                else:
                    where = batch_state_path(output) if output is not None else Path(".ponder-collect.batches.json")
                    await run.provider_batch(client, jobs, where, batch_poll_s)
            elif jobs:
                await run.calls(client, jobs, concurrency, max_cost)
        finally:
            if writer is not None:
                writer.close()
            df = build_table(state.prompts, state.models, state.existing, state.pool, state.touched)
            summary.elapsed_s = time.perf_counter() - run.start
            if output is not None:
                _write_output(df, Path(output))
                wanted = {(p.id, m) for p in state.prompts for m in state.models}
                if df["error"].isna().all() and state.touched <= wanted and not summary.stopped:
                    progress_path(output).unlink(missing_ok=True)  # the table holds every answer
        return OutcomeTable.read(df, name=Path(output).name if output is not None else "collected",
                                 graded=False)
    finally:
        if own:
            await client.aclose()
            client.close()


def collect(prompts: PromptsIn, models: Sequence[str], **kw: Any) -> OutcomeTable:
    """The synchronous twin of :func:`acollect` (runs its own event loop).

    Async connections opened on that loop are released before it closes, so a ``client`` passed
    in works again afterwards.
    """
    async def main() -> OutcomeTable:
        client = kw.get("client")
        try:
            return await acollect(prompts, models, **kw)
        finally:
            if client is not None:
                await client.aclose()

    return asyncio.run(main())
