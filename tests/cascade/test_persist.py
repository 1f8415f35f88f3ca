"""Model files load without executing code and refuse anything tampered or foreign."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from ponder import _persist
from ponder._exceptions import ModelFileError


def _saved(tmp_path):
    meta = {"params": {"C": 1.0}, "models": ["a", "b"]}
    arrays = {"coef": np.arange(6, dtype=np.float64), "terms": np.array(["x", "yy"])}
    _persist.save(tmp_path / "m", meta, arrays, kind="thing")
    return tmp_path / "m", meta, arrays


def test_round_trip(tmp_path):
    d, meta, arrays = _saved(tmp_path)
    m2, a2 = _persist.load(d, kind="thing")
    assert m2 == meta
    assert set(a2) == set(arrays)
    np.testing.assert_array_equal(a2["coef"], arrays["coef"])
    assert a2["terms"].tolist() == ["x", "yy"]


def test_tampered_array_is_refused(tmp_path):
    d, meta, arrays = _saved(tmp_path)
    np.savez_compressed(d / "arrays.npz", coef=arrays["coef"] + 1e-9, terms=arrays["terms"])
    with pytest.raises(ModelFileError, match="content hash mismatch"):
        _persist.load(d)


def test_tampered_meta_is_refused(tmp_path):
    d, _, _ = _saved(tmp_path)
    doc = json.loads((d / "meta.json").read_text())
    doc["meta"]["params"]["C"] = 2.0
    (d / "meta.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="modified or corrupted"):
        _persist.load(d)


def test_other_version_is_refused_with_the_version(tmp_path):
    d, _, _ = _saved(tmp_path)
    doc = json.loads((d / "meta.json").read_text())
    doc["format_version"] = 99
    (d / "meta.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="version 99 is not supported"):
        _persist.load(d)


def test_wrong_kind_and_foreign_files(tmp_path):
    d, _, _ = _saved(tmp_path)
    with pytest.raises(ModelFileError, match="expected a 'ponder-scorer'"):
        _persist.load(d, kind="ponder-scorer")
    (tmp_path / "x").mkdir()
    with pytest.raises(ModelFileError, match="missing meta.json"):
        _persist.load(tmp_path / "x")
    (d / "meta.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        _persist.load(d)


def test_pickled_arrays_never_load(tmp_path):
    """An npz holding an object array (a pickle) is refused, not unpickled."""
    d, _, _ = _saved(tmp_path)
    evil = np.array([{"run": "code"}], dtype=object)
    np.savez(d / "arrays.npz", coef=evil)
    with pytest.raises(ModelFileError, match="content hash mismatch"):
        _persist.load(d)
    # The hash is a checksum anyone can recompute: the pickle must still never load.
    doc = json.loads((d / "meta.json").read_text())
    doc["arrays"] = {"coef": {"dtype": "<f8", "shape": [1]}}
    with open(d / "arrays.npz", "rb") as fh:
        doc["sha256"] = _persist._file_hash(doc["kind"], doc["arrays"], doc["meta"], fh)
    (d / "meta.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="'coef' holds Python objects"):
        _persist.load(d)
    with zipfile.ZipFile(d / "arrays.npz") as z:
        assert z.namelist() == ["coef.npy"]


def test_object_arrays_are_refused_at_save(tmp_path):
    with pytest.raises(TypeError, match="Python objects"):
        _persist.save(tmp_path / "m", {}, {"x": np.array([object()], dtype=object)})
