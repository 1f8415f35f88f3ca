"""One JSONL reader for every input ponder takes, and one for the logs ponder appends to itself."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._exceptions import DataError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-blank line; a bad line raises DataError naming it."""
    path = Path(path)
    try:
        fh = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    i = 0
    try:
        with fh:
            for i, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8-sig" if i == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"not valid UTF-8 (byte {exc.start + 1} of the line)",
                                    file=str(path), row=i) from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"invalid JSON: {exc.msg}", file=str(path), row=i) from None
                if not isinstance(obj, dict):
                    raise DataError("each line must be a JSON object", file=str(path), row=i)
                yield i, obj
    except OSError as exc:  # a corrupt .gz, a read error
        raise DataError(f"cannot read: {exc.strerror or exc}", file=str(path), row=i + 1) from None


def iter_log(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(1-based line number, record) for each non-blank line of a log; the record is None where a
    kill mid-write tore the line (even inside a character). A missing file yields nothing."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as handle:  # bytes: a torn character must not stop the whole file
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield line, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                yield line, None
