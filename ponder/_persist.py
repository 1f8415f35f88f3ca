"""Safe persistence for fitted estimators (scorers, routers): JSON metadata + npz arrays.

Loading never executes code: arrays are read with ``np.load(allow_pickle=False)`` (object arrays
are refused at save time), metadata is plain JSON. A directory holds::

    meta.json     {"format": "ponder-model", "format_version": 1, "kind": ..., "sha256": ..., "meta": {...}}
    arrays.npz    the arrays, by name

``sha256`` covers the canonical JSON of ``meta`` plus every array's name, dtype, shape and bytes,
so any edit to either file, or a file written by another format version, raises
:class:`~ponder._exceptions.ModelFileError` with a message saying what is wrong.

API: ``save(dir, meta, arrays, kind=...) -> Path`` and ``load(dir, kind=None) -> (meta, arrays)``.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ._exceptions import ModelFileError

__all__ = ["FORMAT_VERSION", "load", "save", "content_hash"]

FORMAT = "ponder-model"
FORMAT_VERSION = 1
META_FILE = "meta.json"
ARRAYS_FILE = "arrays.npz"


def _canonical(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def content_hash(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the canonical metadata JSON and every array (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    h.update(_canonical(meta))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(a.dtype.str.encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(
    directory: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], *, kind: str = ""
) -> Path:
    """Write ``meta.json`` + ``arrays.npz`` into ``directory`` (created if needed)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    clean: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        arr = np.asarray(a)
        if arr.dtype.hasobject:
            raise TypeError(f"array {name!r} holds Python objects; convert it (e.g. .astype(str))")
        clean[name] = arr
    # Round-trip meta through JSON first so the hash is computed on exactly what loads back.
    meta_rt = json.loads(json.dumps(meta))
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "sha256": content_hash(meta_rt, clean),
        "meta": meta_rt,
    }
    np.savez_compressed(d / ARRAYS_FILE, **clean)  # type: ignore[arg-type]
    (d / META_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return d


def load(
    directory: str | Path, *, kind: str | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a saved estimator; raise ModelFileError when anything is off."""
    d = Path(directory)
    where = str(d)
    meta_path, arrays_path = d / META_FILE, d / ARRAYS_FILE
    if not d.is_dir():
        raise ModelFileError("not a saved model directory (expected meta.json + arrays.npz)",
                             path=where)
    if not meta_path.exists() or not arrays_path.exists():
        raise ModelFileError("missing meta.json or arrays.npz", path=where)
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"meta.json is not valid JSON ({exc})", path=where) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFileError("not a ponder model file (format field missing or wrong)", path=where)
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"file format version {version!r} is not supported by this ponder "
            f"(reads version {FORMAT_VERSION}); re-train or re-save it with this version",
            path=where,
        )
    if kind is not None and doc.get("kind") != kind:
        raise ModelFileError(f"holds a {doc.get('kind')!r}, expected a {kind!r}", path=where)
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(f"arrays.npz cannot be read safely ({exc})", path=where) from None
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        raise ModelFileError("meta.json has no 'meta' object", path=where)
    if content_hash(meta, arrays) != doc.get("sha256"):
        raise ModelFileError(
            "content hash mismatch: the file was modified or corrupted after it was saved; "
            "refusing to load it",
            path=where,
        )
    return meta, arrays
