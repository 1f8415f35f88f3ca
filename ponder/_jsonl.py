"""One JSONL reader for every input ponder takes (outcome tables, public files, batch inputs)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._exceptions import DataError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based line number, object) for each non-blank line; bad lines raise DataError.

    Lines are decoded one at a time, so a line that is not UTF-8 is named by its number.
    """
    path = Path(path)
    try:
        fh = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    with fh:
        i = 0
        while True:
            try:
                raw = fh.readline()
            except OSError as exc:  # a corrupt .gz, a read error
                raise DataError(f"cannot read: {exc.strerror or exc}", file=str(path),
                                row=i + 1) from None
            if not raw:
                return
            i += 1
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
