"""Outcome tables, one row per (query, model) with the response's quality and cost: the format
everything offline (evaluation, training, the optimizer, the ``replay`` provider) reads."""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._exceptions import DataError
from .._jsonl import iter_jsonl

REQUIRED = ("query_id", "query", "model", "score", "cost_usd")
OPTIONAL = ("response", "input_tokens", "output_tokens", "latency_s", "split", "task", "samples",
            "logprob_mean", "logprob_min", "logprob_tokens", "tool_calls", "sample_tool_calls")


def shown(value: Any) -> str:
    """A value for an error message, as plain Python: ``-0.001``, not ``np.float64(-0.001)``."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


# ---- files: one reader and one writer for every table ponder reads and writes ------------------
_FORMATS = ((".csv", "csv"), (".csv.gz", "csv"), (".jsonl", "jsonl"), (".jsonl.gz", "jsonl"),
            (".ndjson", "jsonl"), (".parquet", "parquet"), (".pq", "parquet"))


def table_format(path: Path) -> str:
    """``csv``, ``jsonl`` or ``parquet``, as the file's name says; any other name is a DataError."""
    fmt = next((f for ext, f in _FORMATS if path.name.lower().endswith(ext)), None)
    if fmt is None:
        raise DataError("unknown format; use .csv, .jsonl or .parquet (optionally .gz)", file=str(path))
    return fmt


def read_frame(path: Path, *, text: bool = False) -> pd.DataFrame:
    """A CSV, JSONL or Parquet file as it is; in a CSV an empty cell is NaN, and ``query_id`` and
    ``model`` (with ``text``, a prompt file: every cell) are text."""
    if not path.exists():
        raise DataError("file not found", file=str(path))
    fmt = table_format(path)
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str if text else {"query_id": str, "model": str},
                               keep_default_na=False, na_values=[""])
        if fmt == "jsonl":
            return pd.DataFrame([obj for _, obj in iter_jsonl(path)])
        return pd.read_parquet(path)
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types; the file is what matters
        raise DataError(f"cannot read: {exc}", file=str(path)) from None


def _plain(value: Any) -> Any:
    """What ``json`` cannot write: numpy arrays and numbers (Parquet's lists), pandas' gaps."""
    if value is pd.NA or value is pd.NaT:
        return None
    return value.tolist() if hasattr(value, "tolist") else str(value)


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` in the format its name says, atomically (never half a file); JSONL with NaN as
    null and exact numbers, Parquet zstd-compressed, a ``.gz`` name gzipped."""
    path = Path(path)
    fmt = table_format(path)
    gz = path.name.lower().endswith(".gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        df.to_parquet(tmp, index=False, compression="zstd")
    elif fmt == "csv":
        df.to_csv(tmp, index=False, compression="gzip" if gz else None)
    else:
        with gzip.open(tmp, "wt", encoding="utf-8") if gz else tmp.open("w", encoding="utf-8") as f:
            for rec in df.to_dict("records"):
                clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in rec.items()}
                f.write(json.dumps(clean, ensure_ascii=False, default=_plain) + "\n")
    os.replace(tmp, path)
    return path


NOT_GRADED = "not graded: run `ponder grade` on it first"

# One answer's largest cost: far above any real price, yet low enough that no sum, mean or
# bootstrap over a table can overflow to ``inf``, so a bound at load covers every later figure.
MAX_COST_USD = 1e12


def _validate(df: pd.DataFrame, source: str, graded: bool = True) -> pd.DataFrame:
    """Check columns and values, naming file, 1-based data row and column; ``graded=False`` accepts
    empty scores (``ponder collect``'s output)."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing == ["score"] and "response" in df.columns:
        if graded:
            raise DataError(f"has no scores: {NOT_GRADED}", file=source, column="score")
        df = df.assign(score=np.nan)
    elif missing:
        raise DataError(f"missing required column(s): {', '.join(missing)}", file=source,
                        column=missing[0])
    df = df.reset_index(drop=True).copy()

    def bad(mask: np.ndarray | pd.Series, column: str, reason: str) -> None:
        idx = np.flatnonzero(np.asarray(mask))
        if idx.size:
            raise DataError(f"{reason} (got {shown(df[column].iloc[idx[0]])})", file=source,
                            row=int(idx[0]) + 1, column=column)

    for col in ("query_id", "query", "model"):
        bad(df[col].isna(), col, "is empty")
        df[col] = df[col].astype(str)
        bad(df[col].str.len() == 0, col, "is empty")
    for col, lo, hi in (("score", 0.0, 1.0), ("cost_usd", 0.0, MAX_COST_USD)):
        num = pd.to_numeric(df[col], errors="coerce")
        if col == "score" and graded and df[col].isna().all() and len(df):
            raise DataError(f"every score is empty: {NOT_GRADED}", file=source, column="score")
        if col == "score" and graded:
            bad(df[col].isna(), col, f"is empty: {NOT_GRADED} (or leave such rows out: "
                                     "`ponder eval --drop-ungraded`)")
        unset = df[col].isna().to_numpy() & (col == "score" and not graded)  # ungraded rows
        bad(num.isna().to_numpy() & ~unset, col, "is not a number")
        vals = num.to_numpy(dtype=float)
        bad(~np.isfinite(vals) & ~unset, col, "is not finite")
        bad((vals < lo) | (vals > hi), col, f"must be in [{lo:g}, {hi:g}]"
            + (" USD: a larger cost for one answer is a data error" if col == "cost_usd" else ""))
        df[col] = vals
    for col in ("input_tokens", "output_tokens", "latency_s", "logprob_mean", "logprob_min",
                "logprob_tokens"):
        if col in df.columns:
            num = pd.to_numeric(df[col], errors="coerce")
            bad(num.isna() & df[col].notna(), col, "is not a number")
            df[col] = num
    for col in ("logprob_mean", "logprob_min"):
        if col in df.columns:
            bad(df[col].to_numpy(dtype=float) > 1e-6, col, "is a log-probability, so must be <= 0")
    if "samples" in df.columns:  # checked, kept as they are (written back as read)
        _check_cells(df["samples"], source, "samples", parse_samples)
    check_tool_calls(df, source)
    if "split" in df.columns:
        df["split"] = df["split"].astype(str).str.strip().str.lower()
        bad(~df["split"].isin(["train", "test"]), "split", "must be 'train' or 'test'")
    if "task" in df.columns:
        df["task"] = df["task"].fillna("").astype(str)
    if "response" in df.columns:
        df["response"] = df["response"].where(df["response"].notna(), "").astype(str)
    dup = df.duplicated(["query_id", "model"]).to_numpy()
    bad(dup, "query_id", "duplicate (query_id, model) pair")
    return df


def parse_samples(value: Any) -> tuple[str, ...]:
    """A ``samples`` cell (a list, a JSON list as ``ponder collect`` writes it, or nothing)."""
    try:
        items = _json_cell(value, "samples")
    except ValueError:
        raise ValueError(f"samples must be a JSON list of strings, got {value.strip()[:40]!r}"
                         ) from None
    if items is None:
        return ()
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"samples must be a list of strings, got {type(items).__name__}")
    return tuple("" if v is None else str(v) for v in items)


def check_tool_calls(df: pd.DataFrame, source: str) -> None:
    """Every ``tool_calls`` and ``sample_tool_calls`` cell must parse; the cells stay as they are."""
    for col, parse in (("tool_calls", parse_tool_calls), ("sample_tool_calls", parse_sample_tool_calls)):
        if col in df.columns:
            _check_cells(df[col], source, col, parse)


def _check_cells(col: pd.Series, source: str, column: str, parse: Callable[[Any], object]) -> None:
    for i, v in enumerate(col.tolist()):
        try:
            parse(v)
        except ValueError as exc:
            raise DataError(str(exc), file=source, row=i + 1, column=column) from None


def _json_cell(value: Any, what: str) -> Any:
    """None for an empty cell, else the parsed JSON string or, as JSONL and Parquet hold it, the
    value itself (numpy arrays as lists)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what} must be JSON ({exc.msg})") from None
    tolist = getattr(value, "tolist", None)  # numpy arrays from Parquet
    return tolist() if callable(tolist) else value


def _calls(value: Any, what: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise ValueError(f"{what} must be a JSON list of tool-call objects, got {str(value)[:40]!r}")
    return tuple(value)


def parse_tool_calls(value: Any) -> tuple[dict[str, Any], ...]:
    """A ``tool_calls`` cell as OpenAI ``message.tool_calls`` objects; ``()`` for an empty cell
    (no tool called, or a table from before the column)."""
    items = _json_cell(value, "tool_calls")
    return () if items is None else _calls(items, "tool_calls")


def parse_sample_tool_calls(value: Any) -> tuple[tuple[dict[str, Any], ...], ...] | None:
    """A ``sample_tool_calls`` cell: each sample's tool calls, in the order of ``samples``."""
    items = _json_cell(value, "sample_tool_calls")
    if items is None:
        return None
    if not isinstance(items, list):
        raise ValueError(f"sample_tool_calls must be a JSON list (one list per sample), got {str(items)[:40]!r}")
    return tuple(_calls(c.tolist() if hasattr(c, "tolist") else c, "each sample_tool_calls entry")
                 for c in items)


@dataclass(frozen=True)
class OutcomeTable:
    """A validated outcome table with dense (query × model) views: models cheapest first (mean
    cost), queries in first-seen order; where a query lacks a model, ``present`` is False."""

    df: pd.DataFrame
    name: str = "outcomes"
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def read(cls, source: str | Path | pd.DataFrame, *, name: str | None = None,
             graded: bool = True) -> OutcomeTable:
        if isinstance(source, pd.DataFrame):
            label = name or "outcomes"
            return cls(_validate(source, label, graded), name=label)
        path = Path(source)
        return cls(_validate(read_frame(path), str(path), graded), name=name or path.name)

    def graded_only(self) -> tuple[OutcomeTable, int]:
        """The rows that have a score, and how many were left out (a query keeps its other rows)."""
        keep = self.df["score"].notna().to_numpy()
        if keep.all():
            return self, 0
        if not keep.any():
            raise DataError(f"every score is empty: {NOT_GRADED}", file=self.name, column="score")
        df = self.df[keep].reset_index(drop=True)
        return OutcomeTable(df, name=self.name), int((~keep).sum())  # rows already validated

    # ---- dense views --------------------------------------------------------------------
    @cached_property
    def models(self) -> list[str]:
        means = self.df.groupby("model", sort=True)["cost_usd"].mean()
        return list(means.sort_values(kind="stable").index)

    @cached_property
    def query_ids(self) -> list[str]:
        return list(pd.unique(self.df["query_id"]))

    @cached_property
    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        q = pd.Index(self.query_ids).get_indexer(self.df["query_id"])
        m = pd.Index(self.models).get_indexer(self.df["model"])
        return q, m

    def _dense(self, column: str, fill: Any = np.nan, dtype: Any = float) -> np.ndarray:
        """(Q, M) of ``column``, ``fill`` where the query lacks the model or the table the column."""
        q, m = self._index
        out = np.full((len(self.query_ids), len(self.models)), fill, dtype=dtype)
        if column in self.df.columns:
            out[q, m] = self.df[column].to_numpy()
        return out

    @cached_property
    def scores(self) -> np.ndarray:
        return self._dense("score")

    @cached_property
    def costs(self) -> np.ndarray:
        return self._dense("cost_usd")

    @cached_property
    def present(self) -> np.ndarray:
        return np.asarray(~np.isnan(self.scores))

    @cached_property
    def responses(self) -> np.ndarray:
        return self._dense("response", fill="", dtype=object)

    @cached_property
    def samples(self) -> np.ndarray:
        """Each answer's samples (the first is the response), as ``ponder collect`` records them."""
        return self._parsed("samples", parse_samples)

    @cached_property
    def tool_calls(self) -> np.ndarray:
        return self._parsed("tool_calls", parse_tool_calls)

    def _parsed(self, column: str, parse: Callable[[Any], tuple[Any, ...]]) -> np.ndarray:
        q, m = self._index
        out = np.empty((len(self.query_ids), len(self.models)), dtype=object)
        out.fill(())
        if column in self.df.columns:
            for i, j, v in zip(q, m, self.df[column].tolist(), strict=True):
                out[i, j] = parse(v)
        return out

    @cached_property
    def logprob_mean(self) -> np.ndarray:
        return self._dense("logprob_mean")

    @cached_property
    def logprob_min(self) -> np.ndarray:
        return self._dense("logprob_min")

    def _per_query(self, column: str) -> list[str]:
        """``column`` per query (its first row's), in ``query_ids`` order."""
        first = self.df.drop_duplicates("query_id").set_index("query_id")[column]
        return [str(v) for v in first.reindex(pd.Index(self.query_ids, dtype=object)).tolist()]

    @cached_property
    def queries(self) -> list[str]:
        return self._per_query("query")

    @cached_property
    def tasks(self) -> list[str]:
        if "task" not in self.df.columns:
            return [""] * len(self.query_ids)
        return self._per_query("task")

    @property
    def n_incomplete_queries(self) -> int:
        return int((~self.present.all(axis=1)).sum())

    # ---- selection ----------------------------------------------------------------------
    def subset(self, query_ids: list[str] | np.ndarray, *, name: str | None = None) -> OutcomeTable:
        pos = pd.Index(self.query_ids).get_indexer(pd.Index(query_ids, dtype=object))
        wanted = np.zeros(len(self.query_ids), dtype=bool)
        wanted[pos[pos >= 0]] = True  # ids this table lacks select nothing
        keep = wanted[self._index[0]]  # by query position: no string matching per row
        return OutcomeTable(self.df[keep].reset_index(drop=True), name=name or self.name)

    def select_models(self, models: list[str]) -> OutcomeTable:
        keep = self.df["model"].isin(set(models))
        return OutcomeTable(self.df[keep].reset_index(drop=True), name=self.name)

    def split(
        self, *, test_fraction: float = 0.5, seed: int = 0, split_column: str | None = "split"
    ) -> tuple[OutcomeTable, OutcomeTable]:
        """Train/test split grouped by query: the ``split`` column if present, else seeded."""
        n = len(self.query_ids)
        if split_column and split_column in self.df.columns:
            labels = [v.lower() for v in self._per_query(split_column)]
        else:
            if not 0.0 < test_fraction < 1.0:
                raise DataError(f"test fraction must be in (0, 1), got {test_fraction}")
            test_set = set(np.random.default_rng(seed).permutation(n)[: int(round(n * test_fraction))])
            labels = ["test" if i in test_set else "train" for i in range(n)]
        train_ids = [q for q, s in zip(self.query_ids, labels, strict=True) if s == "train"]
        test_ids = [q for q, s in zip(self.query_ids, labels, strict=True) if s == "test"]
        if not train_ids or not test_ids:
            raise DataError(
                f"split leaves {len(train_ids)} train and {len(test_ids)} test queries; need both",
                file=self.name,
            )
        return self.subset(train_ids, name=self.name), self.subset(test_ids, name=self.name)

    def __len__(self) -> int:
        return len(self.df)


def read_outcomes(source: str | Path | pd.DataFrame, *, name: str | None = None) -> OutcomeTable:
    """Read and validate an outcome table from CSV, JSONL, Parquet or a DataFrame."""
    return OutcomeTable.read(source, name=name)
