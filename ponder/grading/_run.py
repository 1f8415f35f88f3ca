"""Grade a whole outcome table: read, check, grade every response (and sample), write."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._batch import run_sync
from .._exceptions import DataError
from .._secrets import scrub
from ._agreement import Agreement, agreement
from ._base import Grade, Grader, text

if TYPE_CHECKING:
    import pandas as pd

REQUIRED = ("query_id", "query", "model", "response")
DEFAULT = "default"


@dataclass
class GradeSummary:
    """What a grading run did. Judge spending is ``judge_cost_usd``, never the table's ``cost_usd``."""

    n_rows: int = 0
    n_graded: int = 0
    n_ungraded: int = 0  # NaN scores: unparseable judge replies, references without an answer
    n_samples: int = 0
    mean_score: float = math.nan
    judge_cost_usd: float = 0.0
    judge_calls: int = 0
    judge_cached_calls: int = 0
    elapsed_s: float = 0.0
    graders: dict[str, int] = field(default_factory=dict)  # grader name -> rows
    ungraded_reasons: dict[str, int] = field(default_factory=dict)  # first words -> rows
    agreement: Agreement | None = None
    output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "agreement"}
        d["mean_score"] = None if math.isnan(self.mean_score) else self.mean_score
        d["agreement"] = self.agreement.to_dict() if self.agreement is not None else None
        return d


@dataclass
class GradeResult:
    df: pd.DataFrame
    summary: GradeSummary


def read_table(source: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The table as a DataFrame (score may be empty), and its name for error messages."""
    import pandas as pd

    from ..evaluation._table import check_tool_calls, read_frame  # pandas: only when used

    if isinstance(source, pd.DataFrame):
        df, name = source, "table"
    else:
        df, name = read_frame(Path(source)), str(Path(source))
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"missing required column(s): {', '.join(missing)}", file=name,
                        column=missing[0])
    df = df.reset_index(drop=True).copy()
    for col in ("query_id", "query", "model"):
        empty = df[col].isna() | (df[col].astype(str).str.len() == 0)
        if empty.any():
            raise DataError("is empty", file=name, row=int(empty.to_numpy().argmax()) + 1, column=col)
        df[col] = df[col].astype(str)
    df["response"] = ["" if text(v) == "" else _cell(v) for v in df["response"]]
    for col in ("reference", "task", "tests"):  # a CSV column of numbers with gaps reads as floats
        if col in df.columns:
            df[col] = [None if text(v) == "" else _cell(v) for v in df[col]]
    if "score" in df.columns:
        num = pd.to_numeric(df["score"], errors="coerce")
        bad = (num.isna() & df["score"].notna() & (df["score"].astype(str).str.strip() != "")) | (num < 0) | (num > 1)
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise DataError(f"must be empty or a number in [0, 1] (got {df['score'].iloc[i]!r})",
                            file=name, row=i + 1, column="score")
        df["score"] = num.astype(float)
    if "samples" in df.columns:
        df["samples"] = [_samples(v, name, i + 1) for i, v in enumerate(df["samples"])]
    check_tool_calls(df, name)  # a bad cell is named before anything is graded
    return df, name


def _cell(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 54.0 -> "54"
    if isinstance(value, (dict, list)):  # a JSON reference in a JSONL table (expected tool calls)
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _samples(value: Any, file: str, row: int) -> list[str] | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"must be a JSON list of strings ({exc.msg})", file=file, row=row,
                            column="samples") from None
    if hasattr(value, "tolist"):  # a numpy array from Parquet
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise DataError("must be a JSON list of strings", file=file, row=row, column="samples")
    return value


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    from ..evaluation._table import write_table  # one writer for every table; pandas: when used

    return write_table(df, path)


def _responses(row: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(answer, the row as its grader sees it): the response, then the samples (a first sample
    equal to the response is not graded twice), each with its own ``tool_calls``."""
    from ..evaluation._table import parse_sample_tool_calls  # pandas: only when used

    samples = row.get("samples") or []
    each = parse_sample_tool_calls(row.get("sample_tool_calls"))
    out: list[tuple[str, Mapping[str, Any]]] = [(row["response"], row)]
    for k, sample in enumerate(samples):
        if k == 0 and sample == row["response"]:
            continue
        calls = each[k] if each is not None and k < len(each) else None
        out.append((sample, row if calls is None else {**row, "tool_calls": list(calls)}))
    return out


def _row_columns(row: Mapping[str, Any], grades: list[Grade]) -> dict[str, Any]:
    first = grades[0]
    samples = row.get("samples") or []
    out: dict[str, Any] = {
        "score": first.score, "grade_reason": scrub(first.reason),  # a program may print a key
        "judge_cost_usd": sum(g.cost_usd for g in grades),
        "_calls": sum(g.calls for g in grades), "_cached": sum(g.cached for g in grades)}
    if samples:
        sample_grades = grades if samples[0] == row["response"] else grades[1:]
        out["sample_scores"] = json.dumps([None if math.isnan(g.score) else g.score
                                           for g in sample_grades])
    return out


async def _agrade(grader: Grader, response: str, row: Mapping[str, Any]) -> Grade:
    agrade = getattr(grader, "agrade", None)
    if agrade is None:  # a blocking grader (code runs a process): keep the event loop free
        return await asyncio.to_thread(grader.grade, response, row)
    grade: Grade = await agrade(response, row)
    return grade


async def agrade_table(
    source: str | Path | pd.DataFrame,
    graders: Grader | Mapping[str, Grader],
    *,
    output: str | Path | None = None,
    concurrency: int = 8,
    compare: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> GradeResult:
    """Grade every row of an outcome table (``graders``: one, or ``{task: grader}`` with a
    ``"default"``); write it to ``output`` if given. Adds ``score`` (NaN: undecided),
    ``grade_reason``, ``judge_cost_usd`` and ``sample_scores`` (a JSON list); the input's scores
    move to ``trusted_score``, and ``compare`` measures the grader's ``agreement`` with them."""
    if concurrency < 1:
        raise DataError("concurrency must be at least 1")
    df, name = read_table(source)
    if output is not None:
        from ..evaluation._table import table_format

        table_format(Path(output))  # an unknown output format fails before a judge is paid
    rows: list[dict[str, Any]] = df.to_dict("records")
    picked: list[Grader] = []
    for i, row in enumerate(rows):
        task = text(row.get("task"))
        grader = graders.get(task) or graders.get(DEFAULT) if isinstance(graders, Mapping) else graders
        if grader is None:
            raise DataError(f"no grader for task {task!r} (add it, or a 'default', to [graders])",
                            file=name, row=i + 1, column="task")
        for col in getattr(grader, "columns", ()):
            if col not in df.columns:
                raise DataError(f"has no {col!r} column; the {grader.name!r} grader needs it (`ponder "
                                "collect` records it)", file=name, column=col)
        for col in getattr(grader, "requires", ()):
            if not text(row.get(col)).strip():
                raise DataError(f"is empty; the {grader.name!r} grader needs it", file=name,
                                row=i + 1, column=col)
        picked.append(grader)
    _attach_baselines(rows, picked, name)

    start = time.perf_counter()
    limit = asyncio.Semaphore(concurrency)
    done = 0

    async def one(i: int) -> dict[str, Any]:
        nonlocal done
        async with limit:
            grades = [await _agrade(picked[i], r, view) for r, view in _responses(rows[i])]
        done += 1
        if progress is not None:
            progress(done, len(rows))
        return _row_columns(rows[i], grades)

    results = list(await asyncio.gather(*[one(i) for i in range(len(rows))]))
    out = _assemble(df, results)
    summary = _summarise(out, results, picked, compare)
    summary.elapsed_s = time.perf_counter() - start
    if output is not None:
        summary.output = str(write_table(out, output))
    return GradeResult(out, summary)


def _attach_baselines(rows: list[dict[str, Any]], picked: list[Grader], name: str) -> None:
    """Give rows graded pairwise the baseline model's answer to the same query."""
    for baseline in {b for g in picked if (b := getattr(g, "baseline", None))}:
        answers = {r["query_id"]: r["response"] for r in rows if r["model"] == baseline}
        if not answers:
            raise DataError(f"no rows for the pairwise baseline model {baseline!r}", file=name,
                            column="model")
        for row, grader in zip(rows, picked, strict=True):
            if getattr(grader, "baseline", None) == baseline:
                row["baseline_response"] = answers.get(row["query_id"], "")


def _assemble(df: pd.DataFrame, results: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    from ..evaluation._table import parse_sample_tool_calls, parse_tool_calls

    out = df.copy()
    if "score" in out.columns and out["score"].notna().any():
        out["trusted_score"] = out["score"]
    graded = pd.DataFrame(results, index=out.index)
    for col in ("score", "grade_reason", "judge_cost_usd", "sample_scores"):
        if col in graded.columns:
            out[col] = graded[col]
    if "samples" in out.columns:  # one on-disk form for every format: a JSON list
        out["samples"] = [None if s is None else json.dumps(s, ensure_ascii=False)
                          for s in out["samples"]]
    for col, parse in (("tool_calls", parse_tool_calls), ("sample_tool_calls", parse_sample_tool_calls)):
        if col in out.columns:  # the same: JSON text, also where the input held JSON values
            out[col] = [v if isinstance(v, str) or text(v) == "" else
                        json.dumps(parse(v), ensure_ascii=False) for v in out[col]]
    return out


def _summarise(out: pd.DataFrame, results: list[dict[str, Any]], picked: list[Grader],
               compare: bool) -> GradeSummary:
    scores = out["score"].to_numpy(dtype=float)
    ok = ~(scores != scores)  # not NaN
    s = GradeSummary(n_rows=len(out), n_graded=int(ok.sum()), n_ungraded=int((~ok).sum()),
                     judge_cost_usd=float(out["judge_cost_usd"].sum()) if len(out) else 0.0,
                     judge_calls=sum(r["_calls"] for r in results),
                     judge_cached_calls=sum(r["_cached"] for r in results))
    if ok.any():
        s.mean_score = float(scores[ok].mean())
    if "samples" in out.columns:
        s.n_samples = int(sum(len(json.loads(x)) for x in out["samples"] if x))
    s.graders = dict(Counter(g.name for g in picked))
    s.ungraded_reasons = dict(Counter(str(reason).split(":")[0][:60] for reason, good
                                      in zip(out["grade_reason"], ok, strict=True) if not good))
    if compare:
        trusted = out["trusted_score"] if "trusted_score" in out.columns else [math.nan] * len(out)
        s.agreement = agreement(trusted, scores)
    return s


def grade_table(source: str | Path | pd.DataFrame, graders: Grader | Mapping[str, Grader],
                **kw: Any) -> GradeResult:
    """The synchronous twin of :func:`agrade_table` (see :func:`ponder._batch.run_sync`)."""
    each = graders.values() if isinstance(graders, Mapping) else [graders]
    return run_sync(agrade_table(source, graders, **kw),
                    lambda: [getattr(g, "client", None) for g in each])
