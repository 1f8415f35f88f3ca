"""One JSONL reader for every input ponder takes (outcome tables, public files, batch inputs)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._exceptions import DataError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based line number, object) for each non-blank line; bad lines raise DataError."""
    path = Path(path)
    try:
        fh = gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    with fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON: {exc.msg}", file=str(path), row=i) from None
            if not isinstance(obj, dict):
                raise DataError("each line must be a JSON object", file=str(path), row=i)
            yield i, obj
