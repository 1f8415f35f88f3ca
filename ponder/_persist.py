"""Safe persistence for fitted estimators: ``meta.json`` (format, version, kind, sha256, the array
list, meta) + ``arrays.npz``. Loading never executes code, and its memory is bounded by what the
files declare: the listed arrays' total is capped before anything is read, the hash is checked
before decompressing, each member against the list before it is read. The hash detects
corruption, it is not a signature. Version-1 files (hash over the decoded arrays) still load."""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
import types
import typing
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._exceptions import ConfigError, ModelFileError

__all__ = ["FORMAT_VERSION", "DEFAULT_MAX_BYTES", "MAX_META_BYTES", "load", "save", "content_hash",
           "read_capped", "check_fields", "init_fields"]

FORMAT = "ponder-model"
FORMAT_VERSION = 2
_LEGACY_VERSION = 1  # hash over the decoded arrays, so it can only be checked after reading them
META_FILE = "meta.json"
ARRAYS_FILE = "arrays.npz"

MAX_META_BYTES = 1 << 20  #: meta.json holds parameters and names, never arrays
DEFAULT_MAX_BYTES = 512 << 20  #: all arrays of one file together, decompressed
MAX_BYTES_ENV = "PONDER_MAX_MODEL_BYTES"
MAX_ARRAYS = 4096
_MAX_ZIP_DIRECTORY = 1 << 20  # the zip's central directory, parsed in full by zipfile
_NPY_HEADER_MAX = 10_000  # numpy's own default for .npy headers
_DTYPE_KINDS = "biufcSU"  # bool, integers, floats, complex, bytes, text: nothing else is saved
_CHUNK = 1 << 20
_RAISE = f"raise it with max_bytes= or ${MAX_BYTES_ENV} if the file is trusted and that large"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def _canonical(meta: Any) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def content_hash(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """Version-1 hash: canonical metadata JSON and every array (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    h.update(_canonical(meta))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(a.dtype.str.encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _file_hash(kind: Any, manifest: dict[str, Any], meta: dict[str, Any], npz: IO[bytes]) -> str:
    """Version-2 hash: canonical JSON of kind, array list and meta, then the npz bytes as stored."""
    h = hashlib.sha256(_canonical({"kind": kind, "arrays": manifest, "meta": meta}))
    h.update(b"\n")
    npz.seek(0)
    for chunk in iter(lambda: npz.read(_CHUNK), b""):
        h.update(chunk)
    npz.seek(0)
    return h.hexdigest()


def max_bytes_default() -> int:
    """The array-size cap: ``$PONDER_MAX_MODEL_BYTES`` when set, else :data:`DEFAULT_MAX_BYTES`."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    try:
        value = int(raw or DEFAULT_MAX_BYTES)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"must be a positive number of bytes, got {raw!r}", key=MAX_BYTES_ENV)
    return value


def _open_regular(path: Path, limit: int, inside: Path | None) -> IO[bytes]:
    """``path`` opened if it is a regular file of at most ``limit`` bytes inside ``inside``, else ValueError."""
    if inside is not None:
        target = path.resolve()
        if not target.is_relative_to(inside.resolve()):
            raise ValueError(f"{path.name} is a link to {target}, outside its folder")
    # O_NONBLOCK: a FIFO put in the file's place must not hang the open; harmless for files.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if st.st_size > limit:
            raise ValueError(f"{path.name} is {_mib(st.st_size)}, over the {_mib(limit)} limit")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: str | Path, limit: int = MAX_META_BYTES, *,
                inside: str | Path | None = None) -> bytes:
    """The bytes of ``path`` under :func:`_open_regular`'s rules (for any small file)."""
    with _open_regular(Path(path), limit, None if inside is None else Path(inside)) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:  # it grew after the size check
        raise ValueError(f"{Path(path).name} is over the {_mib(limit)} limit")
    return data


def save(directory: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], *,
         kind: str = "") -> Path:
    """Write ``meta.json`` + ``arrays.npz`` into ``directory`` (created if needed)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    clean: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        arr = np.asarray(a)
        if arr.dtype.hasobject:
            raise TypeError(f"array {name!r} holds Python objects; convert it (e.g. .astype(str))")
        if arr.dtype.kind not in _DTYPE_KINDS or arr.dtype.itemsize == 0:
            raise TypeError(f"array {name!r} has dtype {arr.dtype}; save plain numbers or text")
        clean[name] = arr
    # Round-trip meta through JSON first so the hash is computed on exactly what loads back.
    meta_rt = json.loads(json.dumps(meta))
    manifest = {n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in clean.items()}
    np.savez_compressed(d / ARRAYS_FILE, **clean)  # type: ignore[arg-type]
    with open(d / ARRAYS_FILE, "rb") as fh:
        digest = _file_hash(kind, manifest, meta_rt, fh)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "sha256": digest,
           "arrays": manifest, "meta": meta_rt}
    (d / META_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return d


_Spec = tuple[np.dtype[Any], tuple[int, ...]]


def _nbytes(spec: _Spec) -> int:
    return math.prod(spec[1]) * spec[0].itemsize


def load(directory: str | Path, *, kind: str | None = None, max_bytes: int | None = None
         ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a saved estimator; ModelFileError when anything is off."""
    d = Path(directory)
    where = str(d)
    limit = max_bytes_default() if max_bytes is None else int(max_bytes)
    meta_path, arrays_path = d / META_FILE, d / ARRAYS_FILE
    if not d.is_dir():
        raise ModelFileError("not a saved model directory (expected meta.json + arrays.npz)",
                             path=where)
    if not meta_path.exists() or not arrays_path.exists():
        raise ModelFileError("missing meta.json or arrays.npz", path=where)
    try:
        doc = json.loads(read_capped(meta_path, MAX_META_BYTES, inside=d).decode("utf-8"))
    except ValueError as exc:  # includes UnicodeDecodeError and JSONDecodeError
        what = "is not valid JSON" if isinstance(exc, (UnicodeError, json.JSONDecodeError)) \
            else "refused"
        raise ModelFileError(f"meta.json {what} ({exc})", path=where) from None
    except (OSError, RecursionError) as exc:
        raise ModelFileError(f"meta.json cannot be read ({exc})", path=where) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFileError("not a ponder model file (format field missing or wrong)", path=where)
    version = doc.get("format_version")
    if version not in (FORMAT_VERSION, _LEGACY_VERSION):
        raise ModelFileError(f"file format version {version!r} is not supported by this ponder "
                             f"(reads versions {_LEGACY_VERSION} and {FORMAT_VERSION}); re-train "
                             "or re-save it with this version", path=where)
    if kind is not None and doc.get("kind") != kind:
        raise ModelFileError(f"holds a {doc.get('kind')!r}, expected a {kind!r}", path=where)
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        raise ModelFileError("meta.json has no 'meta' object", path=where)
    mismatch = ModelFileError(
        "content hash mismatch: the file was modified or corrupted after it was saved; "
        "refusing to load it", path=where)

    if version == FORMAT_VERSION:
        manifest = doc.get("arrays")
        specs = _check_manifest(manifest, limit, where)
        assert isinstance(manifest, dict)  # checked just above
        total = sum(map(_nbytes, specs.values()))
        # What a compressed zip of these arrays can take at most (incompressible data, headers).
        stored_cap = total + total // 64 + (_NPY_HEADER_MAX + 1024) * len(specs) + 65536
        with _open_arrays(arrays_path, stored_cap, d, where,
                          f"more than the {_mib(total)} of arrays meta.json lists can take") as fh:
            if _file_hash(doc.get("kind"), manifest, meta, fh) != doc.get("sha256"):
                raise mismatch
            arrays = _read_npz(fh, specs, limit, where)
    else:
        with _open_arrays(arrays_path, limit + 65536 * MAX_ARRAYS, d, where,
                          f"over the {_mib(limit)} limit") as fh:
            arrays = _read_npz(fh, None, limit, where)
        if content_hash(meta, arrays) != doc.get("sha256"):
            raise mismatch
    return meta, arrays


def _open_arrays(path: Path, cap: int, d: Path, where: str, too_big: str) -> IO[bytes]:
    size = path.stat().st_size if path.is_file() else 0
    if size > cap:
        raise ModelFileError(f"arrays.npz refused: it is {_mib(size)} on disk, {too_big}",
                             path=where)
    try:
        return _open_regular(path, cap, d)
    except ValueError as exc:
        raise ModelFileError(f"arrays.npz refused ({exc})", path=where) from None
    except OSError as exc:
        raise ModelFileError(f"arrays.npz cannot be read ({exc})", path=where) from None


def _dtype(value: Any) -> np.dtype[Any] | None:
    """The dtype a manifest entry names, if it is a plain numeric or text one."""
    if not isinstance(value, str) or len(value) > 32:
        return None
    try:
        dt = np.dtype(value)
    except (TypeError, ValueError):
        return None
    return dt if dt.kind in _DTYPE_KINDS and dt.itemsize > 0 and not dt.hasobject else None


def _check_manifest(manifest: Any, limit: int, where: str) -> dict[str, _Spec]:
    """Validate meta.json's array list; refuse it when it declares more than ``limit`` bytes."""
    def bad(reason: str) -> ModelFileError:
        return ModelFileError(f"meta.json: 'arrays' {reason}", path=where)

    if not isinstance(manifest, dict):
        raise bad("is missing or not an object")
    if len(manifest) > MAX_ARRAYS:
        raise bad(f"lists {len(manifest)} arrays, more than the {MAX_ARRAYS} ponder reads")
    specs: dict[str, _Spec] = {}
    total = 0
    for name, spec in manifest.items():
        if not name or len(name) > 200:
            raise bad(f"has an invalid array name {name[:40]!r}")
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape"}:
            raise bad(f"entry {name!r} must be exactly {{'dtype', 'shape'}}")
        dt, shape = _dtype(spec["dtype"]), spec["shape"]
        if dt is None:
            raise bad(f"entry {name!r} has dtype {spec['dtype']!r}, not a plain number or text")
        if (not isinstance(shape, list) or len(shape) > 32
                or not all(type(n) is int and n >= 0 for n in shape)):
            raise bad(f"entry {name!r} has an invalid shape {shape!r}")
        total += math.prod(shape) * dt.itemsize
        if total > limit:
            raise ModelFileError(
                f"arrays.npz: the arrays meta.json lists take over {_mib(total)} (at array "
                f"{name!r}), more than the {_mib(limit)} limit; {_RAISE}", path=where)
        specs[name] = (dt, tuple(shape))
    return specs


def _check_zip_directory(fh: IO[bytes]) -> None:
    """Refuse an oversized or ZIP64 central directory before ``zipfile`` parses it in full."""
    size = fh.seek(0, os.SEEK_END)
    tail_len = min(size, 22 + 65535 + 20)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    fh.seek(0)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        raise zipfile.BadZipFile("no zip end-of-directory record (truncated or not a zip)")
    _, _, _, _, entries, cd_size, cd_offset, _ = struct.unpack("<4s4H2LH", tail[i:i + 22])
    zip64_locator = i >= 20 and tail[i - 20:i - 16] == b"PK\x06\x07"
    if entries == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset) or zip64_locator:
        raise ValueError("a ZIP64 archive; ponder model files never are")
    if entries > MAX_ARRAYS or cd_size > _MAX_ZIP_DIRECTORY:
        raise ValueError(f"its zip directory lists {entries} members in {_mib(cd_size)}; "
                         f"ponder reads at most {MAX_ARRAYS} arrays")


def _read_npz(fh: IO[bytes], specs: dict[str, _Spec] | None, limit: int,
              where: str) -> dict[str, np.ndarray]:
    """Read exactly the arrays ``specs`` lists (version 1: every ``.npy`` member), bounded."""
    try:
        _check_zip_directory(fh)
        with zipfile.ZipFile(fh) as zf:
            names = [i.filename for i in zf.infolist()]
            if len(set(names)) != len(names):
                raise ModelFileError("arrays.npz holds duplicate members", path=where)
            if specs is None:
                wanted: dict[str, _Spec | None] = {n[:-4]: None for n in names
                                                   if n.endswith(".npy")}
            else:
                wanted = dict(specs)
                listed = {n + ".npy" for n in specs}
                extra = sorted(set(names) - listed)
                if extra:
                    raise ModelFileError(f"arrays.npz holds {extra[0]!r}, which meta.json does not "
                                         "list; refusing the file", path=where)
                missing = sorted(listed - set(names))
                if missing:
                    raise ModelFileError(f"arrays.npz lacks {missing[0]!r}, which meta.json lists",
                                         path=where)
            budget = limit
            out: dict[str, np.ndarray] = {}
            for name, spec in wanted.items():
                out[name] = _read_member(zf, name, spec, budget, limit, where)
                budget -= out[name].nbytes
            return out
    except (ValueError, OSError, EOFError, RuntimeError, NotImplementedError, zlib.error,
            zipfile.BadZipFile) as exc:
        raise ModelFileError(f"arrays.npz cannot be read safely ({exc})", path=where) from None


def _read_member(zf: zipfile.ZipFile, name: str, spec: _Spec | None, budget: int, limit: int,
                 where: str) -> np.ndarray:
    def refuse(reason: str) -> ModelFileError:
        return ModelFileError(f"arrays.npz: array {name!r} {reason}", path=where)

    over = f"over the {_mib(limit)} limit; {_RAISE}"
    info = zf.getinfo(name + ".npy")
    if spec is not None and info.file_size > _nbytes(spec) + _NPY_HEADER_MAX:
        raise refuse(f"is {_mib(info.file_size)} uncompressed, but meta.json lists it as "
                     f"{spec[0].str} {spec[1]}")
    if info.file_size > budget + _NPY_HEADER_MAX:
        raise refuse(f"is {_mib(info.file_size)} uncompressed, {over}")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise refuse(f"is in .npy format {version}, which ponder does not read")
        shape, fortran, dtype = read_header(f, _NPY_HEADER_MAX)
        if dtype.hasobject:
            raise refuse("holds Python objects; loading it would need pickle, which ponder "
                         "never does")
        if dtype.kind not in _DTYPE_KINDS or dtype.itemsize == 0:
            raise refuse(f"has dtype {dtype}, not a plain number or text type")
        if spec is not None and (dtype != spec[0] or tuple(shape) != spec[1]):
            raise refuse(f"is {dtype.str} {tuple(shape)} in its header, but meta.json lists "
                         f"{spec[0].str} {spec[1]}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > budget:
            raise refuse(f"declares shape {tuple(shape)} {dtype} ({_mib(nbytes)}), {over}")
        if info.file_size != f.tell() + nbytes:
            raise refuse("has a zip entry size that does not match its .npy header")
        if nbytes == 0:
            return np.zeros(shape, dtype=dtype)
        buf = bytearray(nbytes)
        view, pos = memoryview(buf), 0
        while pos < nbytes:
            chunk = f.read(min(_CHUNK, nbytes - pos))
            if not chunk:
                raise refuse("is truncated")
            view[pos:pos + len(chunk)] = chunk
            pos += len(chunk)
    arr = np.frombuffer(buf, dtype=dtype)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def _matches(value: Any, hint: Any) -> bool:
    """Does a JSON value match a type hint (``Any``: any JSON scalar)?"""
    if hint is Any:
        return value is None or isinstance(value, (bool, int, float, str))
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if hint in (int, float):  # a float field takes an int too; neither takes a bool
        return isinstance(value, (int, hint)) and not isinstance(value, bool)
    return hint in (bool, str, dict, list) and isinstance(value, hint)


def _describe(hint: Any) -> str:
    if hint is Any:
        return "a JSON scalar"
    if isinstance(hint, type):
        return "null" if hint is type(None) else hint.__name__
    return str(hint).replace("NoneType", "None")


def check_fields(obj: Any, fields: dict[str, Any], *, where: str, what: str,
                 required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Refuse a ``meta.json`` section with a key ``fields`` lacks, a missing ``required`` key or a
    value of the wrong type: a file can never set attributes it was not meant to."""
    if not isinstance(obj, dict):
        raise ModelFileError(f"meta.json: {what} must be an object, got {type(obj).__name__}",
                             path=where)
    for key in obj:
        if key not in fields:
            raise ModelFileError(f"meta.json: unknown field {what}.{key} (this format defines "
                                 f"{', '.join(sorted(fields))}); refusing the file", path=where)
    for key in required:
        if key not in obj:
            raise ModelFileError(f"meta.json: missing field {what}.{key}", path=where)
    for key, value in obj.items():
        if not _matches(value, fields[key]):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ModelFileError(f"meta.json: field {what}.{key} must be "
                                 f"{_describe(fields[key])}, got {shown}", path=where)
    return obj


def init_fields(cls: type) -> dict[str, Any]:
    """``{parameter: type hint}`` of ``cls.__init__`` (the ``params`` a model file may hold)."""
    hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    hints.pop("return", None)
    return hints
