"""Hostile model and strategy files: bounded memory, exact fields, references kept in their folder.

The content hash of a model file is a checksum anyone can recompute, so every crafted file here
carries a correct one: what protects the loader is what it checks, not the hash.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import ponder
from ponder import _persist
from ponder._exceptions import ConfigError, ModelFileError

ROUTER_FIXTURE = Path(__file__).parents[1] / "fixtures" / "routers" / "outcomes.csv"
CASCADE_FIXTURE = Path(__file__).parents[1] / "fixtures" / "cascade" / "outcomes.csv"
HUGE = 400_000_000  # float32 elements: 1.6 GB declared, about 1.6 MB stored

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="measures memory through /proc and RLIMIT_AS")


# ---- crafting files ---------------------------------------------------------------------------

def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _deflated_zeros(header: bytes, nbytes: int, block: int = 1 << 24) -> tuple[bytes, int, int]:
    """(raw deflate stream, CRC-32, size) of ``header`` + ``nbytes`` zeros, without compressing
    them all: after a full flush the compressor forgets its history, so every block of zeros
    compresses to the same bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zero = bytes(block)
    full, rest = divmod(nbytes, block)
    parts = [c.compress(header), c.flush(zlib.Z_FULL_FLUSH)]
    parts.append((c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)) * full)
    crc = zlib.crc32(header)
    for _ in range(full):
        crc = zlib.crc32(zero, crc)
    parts.append(c.compress(zero[:rest]) + c.flush())
    crc = zlib.crc32(zero[:rest], crc)
    return b"".join(parts), crc, len(header) + nbytes


def _write_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> None:
    """A zip of already-deflated members (name, stream, crc, uncompressed size as declared)."""
    with open(path, "wb") as f:
        central = b""
        for name, comp, crc, usize in members:
            off, n = f.tell(), name.encode()
            f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(comp),
                                usize, len(n), 0) + n + comp)
            central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc,
                                   len(comp), usize, len(n), 0, 0, 0, 0, 0, off) + n
        cd_off = f.tell()
        f.write(central)
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                            len(central), cd_off, 0))


def _write_doc(d: Path, *, version: int = 2, manifest: dict | None = None,
               kind: str = "thing") -> Path:
    """meta.json for the arrays.npz already in ``d``, with a correct hash (version 2)."""
    meta = {"x": 1}
    doc: dict = {"format": "ponder-model", "format_version": version, "kind": kind, "meta": meta}
    if version == 2:
        doc["arrays"] = manifest
        with open(d / "arrays.npz", "rb") as fh:
            doc["sha256"] = _persist._file_hash(kind, manifest, meta, fh)
    else:  # version 1 hashes the decoded arrays, so it can only be checked after reading them
        doc["sha256"] = "0" * 64
    (d / "meta.json").write_text(json.dumps(doc))
    return d


def _rehash(d: Path) -> None:
    doc = json.loads((d / "meta.json").read_text())
    with open(d / "arrays.npz", "rb") as fh:
        doc["sha256"] = _persist._file_hash(doc["kind"], doc["arrays"], doc["meta"], fh)
    (d / "meta.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def zeros_member():
    header = _npy_header((HUGE,))
    return header, *_deflated_zeros(header, HUGE * 4)


_CHILD = textwrap.dedent(r"""
    import json, resource, sys, time, tracemalloc

    from ponder import _persist
    from ponder._exceptions import ModelFileError

    def vm_bytes():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
        return 0

    # An unbounded loader must fail here (MemoryError), not take the shared machine's memory.
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + (1 << 30), resource.RLIM_INFINITY))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    out = []
    for d in sys.argv[1:]:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        t = time.perf_counter()
        try:
            _persist.load(d)
            err = None
        except ModelFileError as exc:
            err = str(exc)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            err = f"UNEXPECTED {type(exc).__name__}: {exc}"
        out.append({"error": err, "seconds": time.perf_counter() - t,
                    "peak": tracemalloc.get_traced_memory()[1] - base})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    print(json.dumps({"cases": out, "rss_growth": rss}))
""")


def _load_in_child(*dirs: Path) -> list[dict]:
    """Load each folder in a fresh, address-space-capped interpreter; per-case error, seconds and
    peak traced allocation. Also asserts the process's peak RSS grew by under 100 MB."""
    r = subprocess.run([sys.executable, "-c", _CHILD, *map(str, dirs)], capture_output=True,
                       text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["rss_growth"] < 100e6, res
    return res["cases"]


def _assert_refused_small_and_fast(case: dict, *needles: str) -> None:
    assert case["error"] is not None and not case["error"].startswith("UNEXPECTED"), case
    for needle in needles:
        assert needle in case["error"], case
    assert case["seconds"] < 1.0, case
    assert case["peak"] < 100e6, case


# ---- 1. memory ---------------------------------------------------------------------------------

@linux_only
def test_arrays_declaring_gigabytes_are_refused_before_reading(tmp_path, zeros_member):
    header, comp, crc, size = zeros_member
    assert len(comp) < 2_000_000  # the whole attack fits in a small file
    cases = {}
    # v2, the array list honestly declares 1.6 GB
    d = tmp_path / "declared"
    d.mkdir()
    _write_zip(d / "arrays.npz", [("coef.npy", comp, crc, size)])
    cases["declared"] = _write_doc(d, manifest={"coef": {"dtype": "<f4", "shape": [HUGE]}})
    # v2, the array list says 4 floats: the 1.5 MB npz is already more than that can take
    d = tmp_path / "tiny-list"
    d.mkdir()
    _write_zip(d / "arrays.npz", [("coef.npy", comp, crc, size)])
    cases["tiny-list"] = _write_doc(d, manifest={"coef": {"dtype": "<f4", "shape": [4]}})
    # v2, the array list says 4 MB, the npz member holds 1.6 GB
    d = tmp_path / "lying-list"
    d.mkdir()
    _write_zip(d / "arrays.npz", [("coef.npy", comp, crc, size)])
    cases["lying-list"] = _write_doc(d, manifest={"coef": {"dtype": "<f4", "shape": [1 << 20]}})
    # version 1 (no array list): the member's own size and header are all there is
    d = tmp_path / "v1"
    d.mkdir()
    _write_zip(d / "arrays.npz", [("coef.npy", comp, crc, size)])
    cases["v1"] = _write_doc(d, version=1)
    # version 1, the zip directory claims a tiny size (with the CRC of that much), the .npy
    # header 1.6 GB
    d = tmp_path / "v1-fake-size"
    d.mkdir()
    _write_zip(d / "arrays.npz", [("coef.npy", comp, zlib.crc32(header + bytes(16)),
                                   len(header) + 16)])
    cases["v1-fake-size"] = _write_doc(d, version=1)

    results = dict(zip(cases, _load_in_child(*cases.values()), strict=True))
    _assert_refused_small_and_fast(results["declared"], str(cases["declared"]), "'coef'",
                                   "512.0 MiB limit")
    _assert_refused_small_and_fast(results["tiny-list"], "arrays.npz refused: it is 1.5 MiB on "
                                   "disk, more than the 16 bytes of arrays meta.json lists")
    _assert_refused_small_and_fast(results["lying-list"], "arrays.npz: array 'coef' is 1525.9 "
                                   "MiB uncompressed, but meta.json lists it as <f4 (1048576,)")
    _assert_refused_small_and_fast(results["v1"], "arrays.npz: array 'coef'", "limit")
    _assert_refused_small_and_fast(results["v1-fake-size"], "'coef' declares shape (400000000,)")


def test_members_the_format_does_not_list_are_refused_unread(tmp_path):
    _persist.save(tmp_path / "m", {"a": 1}, {"coef": np.arange(3.0)}, kind="thing")
    d = tmp_path / "m"
    with zipfile.ZipFile(d / "arrays.npz", "a") as zf:
        zf.writestr("junk.npy", b"\x93NUMPY" + b"x" * 100)
    _rehash(d)
    with pytest.raises(ModelFileError, match=r"holds 'junk.npy', which meta.json does not list"):
        _persist.load(d)


def test_max_bytes_is_a_ceiling_on_honest_files_too(tmp_path, monkeypatch):
    _persist.save(tmp_path / "m", {}, {"coef": np.zeros(1000)}, kind="thing")
    with pytest.raises(ModelFileError, match="over the 4096 bytes limit|more than the 4096 bytes"):
        _persist.load(tmp_path / "m", max_bytes=4096)
    monkeypatch.setenv("PONDER_MAX_MODEL_BYTES", "4096")
    with pytest.raises(ModelFileError, match="PONDER_MAX_MODEL_BYTES"):
        _persist.load(tmp_path / "m")
    monkeypatch.setenv("PONDER_MAX_MODEL_BYTES", "8000")
    assert _persist.load(tmp_path / "m")[1]["coef"].shape == (1000,)


@linux_only
def test_meta_json_that_is_a_device_fifo_or_huge_is_refused_fast(tmp_path):
    cases = {}
    for name in ("dev-zero", "fifo", "huge", "link-out"):
        _persist.save(tmp_path / name, {"a": 1}, {"coef": np.arange(3.0)}, kind="thing")
        cases[name] = tmp_path / name
    (cases["dev-zero"] / "meta.json").unlink()
    (cases["dev-zero"] / "meta.json").symlink_to("/dev/zero")
    (cases["fifo"] / "meta.json").unlink()
    os.mkfifo(cases["fifo"] / "meta.json")
    doc = json.loads((cases["huge"] / "meta.json").read_text())
    doc["pad"] = "x" * (2 << 20)
    (cases["huge"] / "meta.json").write_text(json.dumps(doc))
    (tmp_path / "elsewhere.json").write_text((cases["link-out"] / "meta.json").read_text())
    (cases["link-out"] / "meta.json").unlink()
    (cases["link-out"] / "meta.json").symlink_to(tmp_path / "elsewhere.json")

    results = dict(zip(cases, _load_in_child(*cases.values()), strict=True))
    _assert_refused_small_and_fast(results["dev-zero"], "meta.json refused", "outside its folder")
    _assert_refused_small_and_fast(results["fifo"], "meta.json refused", "not a regular file")
    _assert_refused_small_and_fast(results["huge"], "meta.json refused", "1.0 MiB limit")
    _assert_refused_small_and_fast(results["link-out"], "outside its folder")


def test_meta_json_linked_inside_its_folder_still_loads(tmp_path):
    _persist.save(tmp_path / "m", {"a": 1}, {"coef": np.arange(3.0)}, kind="thing")
    (tmp_path / "m" / "meta.json").rename(tmp_path / "m" / "meta.v2.json")
    (tmp_path / "m" / "meta.json").symlink_to("meta.v2.json")
    assert _persist.load(tmp_path / "m")[0] == {"a": 1}


def test_version_1_files_still_load(tmp_path):
    arrays = {"coef": np.arange(6.0).reshape(2, 3), "terms": np.array(["x", "yy"])}
    d = tmp_path / "v1"
    d.mkdir()
    np.savez_compressed(d / "arrays.npz", **arrays)
    doc = {"format": "ponder-model", "format_version": 1, "kind": "thing", "meta": {"a": 1},
           "sha256": _persist.content_hash({"a": 1}, arrays)}
    (d / "meta.json").write_text(json.dumps(doc))
    meta, got = _persist.load(d, kind="thing")
    assert meta == {"a": 1} and got["terms"].tolist() == ["x", "yy"]
    np.testing.assert_array_equal(got["coef"], arrays["coef"])


def test_fortran_ordered_and_empty_arrays_round_trip(tmp_path):
    arrays = {"f": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "e": np.zeros((0, 5)),
              "s": np.float32(2.5), "b": np.array([True, False])}
    _persist.save(tmp_path / "m", {}, arrays)
    _, got = _persist.load(tmp_path / "m")
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == np.asarray(v).dtype


# ---- 2. exact fields --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_router(tmp_path_factory):
    from ponder.evaluation import read_outcomes
    from ponder.routers import UtilityRouter, save_router

    train, _ = read_outcomes(ROUTER_FIXTURE).split()
    return save_router(UtilityRouter().fit(train), tmp_path_factory.mktemp("r") / "router")


def _edited(src: Path, dst: Path, edit) -> Path:
    """A copy of a saved model folder with ``edit`` applied to its meta and the hash recomputed."""
    shutil.copytree(src, dst)
    doc = json.loads((dst / "meta.json").read_text())
    edit(doc["meta"])
    (dst / "meta.json").write_text(json.dumps(doc))
    _rehash(dst)
    return dst


def test_router_with_recomputed_hash_and_no_change_loads(saved_router, tmp_path):
    from ponder.routers import load_router

    d = _edited(saved_router, tmp_path / "r", lambda m: None)
    assert load_router(d).models_


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["extra"].update(route="x"), "unknown field extra.route"),
    (lambda m: m.update(route="x"), "unknown field meta.route"),
    (lambda m: m["params"].update(evil=1), "unknown field params.evil"),
    (lambda m: m.update(strong="1"), "field meta.strong must be int, got '1'"),
    (lambda m: m.update(models="ab"), "field meta.models must be list[str]"),
    (lambda m: m.update(knob=True), "field meta.knob must be float"),
    (lambda m: m["params"].update(C="0.1"), "field params.C must be float"),
    (lambda m: m["extra"].update(n_iter_=1.5), "field extra.n_iter_ must be int"),
    (lambda m: m.update(calibration={"target": "budget"}), "missing field calibration.value"),
    (lambda m: m.update(strong=7), "models, strong and n_train are inconsistent"),
])
def test_router_fields_are_exactly_the_format(saved_router, tmp_path, edit, message):
    from ponder.routers import load_router

    d = _edited(saved_router, tmp_path / "r", edit)
    with pytest.raises(ModelFileError, match="meta.json") as info:
        load_router(d)
    assert message in str(info.value) and str(d) in str(info.value)


@pytest.fixture(scope="module")
def saved_scorer(tmp_path_factory):
    from ponder.cascade import fit_scorer
    from ponder.evaluation import read_outcomes

    train, _ = read_outcomes(CASCADE_FIXTURE).split()
    scorer = fit_scorer(train, {"learner": "logistic"})
    return scorer.save(tmp_path_factory.mktemp("s") / "scorer")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(route="x"), "unknown field meta.route"),
    (lambda m: m["params"].update(C="1"), "field params.C must be float"),
    (lambda m: m.update(models="ab"), "field meta.models must be list[str]"),
    (lambda m: m.update(learner_state="pickle"), "learner_state must be one of"),
])
def test_scorer_fields_are_exactly_the_format(saved_scorer, tmp_path, edit, message):
    from ponder.scorers import AnswerScorer

    AnswerScorer.load(_edited(saved_scorer, tmp_path / "ok", lambda m: None))
    d = _edited(saved_scorer, tmp_path / "s", edit)
    with pytest.raises(ModelFileError, match="meta.json") as info:
        AnswerScorer.load(d)
    assert message in str(info.value) and str(d) in str(info.value)


# ---- 2. strategy references -------------------------------------------------------------------

def _router_strategy(path: Path, ref: str, kind: str = "router", **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": "ponder-strategy", "version": 1, "kind": kind,
                                "router": ref, **extra}))
    return path


def test_strategy_references_stay_in_their_folder(saved_router, tmp_path):
    from ponder.routers import LiveRouter

    outside = tmp_path / "outside" / "router"
    shutil.copytree(saved_router, outside)
    shutil.copytree(saved_router, tmp_path / "s" / "router")
    (tmp_path / "s" / "link").symlink_to(outside)
    ok = _router_strategy(tmp_path / "s" / "ok.json", "router")
    assert isinstance(ponder.load_strategy(ok), LiveRouter)

    bad = {
        "dotdot": ("../outside/router", "leads out of the strategy's folder"),
        "absolute": (str(outside), "is an absolute path"),
        "symlink": ("link", "outside the strategy's folder"),
    }
    for name, (ref, message) in bad.items():
        path = _router_strategy(tmp_path / "s" / f"{name}.json", ref)
        with pytest.raises(ConfigError, match="allow_outside=True") as info:
            ponder.load_strategy(path)
        assert message in str(info.value) and str(path) in str(info.value)
        assert info.value.key == "router"
        assert isinstance(ponder.load_strategy(path, allow_outside=True), LiveRouter)


def test_cascade_and_route_cascade_references_stay_in_their_folder(saved_router, saved_scorer,
                                                                   tmp_path):
    from ponder.cascade import Cascade

    s = tmp_path / "s"
    s.mkdir()
    shutil.copytree(saved_scorer, tmp_path / "scorer")
    cascade = {"format": "ponder-strategy", "version": 1, "kind": "cascade",
               "rungs": [{"model": "a", "threshold": 0.5, "scorer": "../scorer"}, {"model": "b"}]}
    (s / "cascade.json").write_text(json.dumps(cascade))
    with pytest.raises(ConfigError, match="leads out") as info:
        ponder.load_strategy(s / "cascade.json")
    assert info.value.key == "rungs[0].scorer"
    assert isinstance(ponder.load_strategy(s / "cascade.json", allow_outside=True), Cascade)

    shutil.copytree(saved_router, s / "router")
    (tmp_path / "c.json").write_text(json.dumps(cascade))
    rc = _router_strategy(s / "rc.json", "router", kind="route-cascade", cascade="../c.json")
    with pytest.raises(ConfigError, match="leads out") as info:
        ponder.load_strategy(rc)
    assert info.value.key == "cascade"


def test_local_model_paths_stay_in_the_strategy_folder(tmp_path, monkeypatch):
    """``local:PATH`` names a file the local provider opens: the same rule as every reference."""
    s = tmp_path / "s"
    s.mkdir()
    (s / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "outside.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)

    def fallback(name: str, *models: str) -> Path:
        path = s / f"{name}.json"
        path.write_text(json.dumps({"format": "ponder-strategy", "version": 1, "kind": "fallback",
                                    "models": ["openai:gpt-4o-mini", *models]}))
        return path

    for name, model in {"absolute": "local:/etc/passwd", "relative": "local:outside.gguf",
                        "dotdot": "local:s/../outside.gguf"}.items():
        path = fallback(name, model)
        with pytest.raises(ConfigError, match="outside the strategy's folder") as info:
            ponder.load_strategy(path)
        assert info.value.key == "models" and model in str(info.value)
        assert ponder.load_strategy(path, allow_outside=True).models[-1] == model
    single = s / "single.json"
    single.write_text(json.dumps({"format": "ponder-strategy", "kind": "single",
                                  "model": "local:/etc/passwd"}))
    with pytest.raises(ConfigError, match="outside the strategy's folder"):
        ponder.load_strategy(single)
    # inside the folder (as the provider opens it, from the working directory), or a built-in name
    assert ponder.load_strategy(fallback("inside", "local:s/m.gguf", "local:smollm2")).models[1:] \
        == ["local:s/m.gguf", "local:smollm2"]


def test_strategy_file_size_is_capped(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"format": "ponder-strategy", "kind": "single", "model": "a:b",
                                "pad": "x" * (2 << 20)}))
    with pytest.raises(ConfigError, match="1.0 MiB limit"):
        ponder.load_strategy(path)


# ---- 3. safetensors ---------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_bad_safetensors_names_the_file(tmp_path, damage):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    from ponder.local._loading import load_model

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    weights = tmp_path / "model.safetensors"
    if damage == "garbage":
        weights.write_bytes(b"\x00\x01not a safetensors file")
    else:
        save_file({"w": torch.zeros(64, 64)}, str(weights))
        weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ModelFileError, match="not a readable safetensors file") as info:
        load_model(tmp_path)
    assert str(weights) in str(info.value)
