from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ponder._exceptions import ModelFileError, NotFittedError
from ponder._features import agreement_matrix
from ponder.cascade import fit_scorer, training_frame
from ponder.scorers import AnswerScorer, scorer_frame


def _frame(table, model, earlier_model=None):
    m = table.models.index(model)
    earlier = None
    if earlier_model is not None:
        a = table.models.index(earlier_model)
        earlier = [[(earlier_model, str(r))] for r in table.responses[:, a]]
    X = scorer_frame(table.queries, [str(r) for r in table.responses[:, m]],
                     [model] * len(table.query_ids), earlier)
    return X, table.scores[:, m]


def test_sklearn_conventions(split):
    train, _ = split
    s = AnswerScorer(C=0.5)
    assert s.get_params()["C"] == 0.5 and not hasattr(s, "models_")
    with pytest.raises(NotFittedError):
        s.predict_proba(_frame(train, "small")[0])
    X, y = training_frame(train)
    assert s.fit(X, y) is s
    assert s.models_ == ["large", "medium", "small"]
    assert s.coef_.ndim == 1 and s.calibrator_ is not None
    with pytest.raises(ValueError, match="single class"):
        AnswerScorer().fit(X.iloc[:5], np.ones(5))
    with pytest.raises(TypeError, match="DataFrame"):
        s.predict_proba([["q", "r", "m"]])


def test_held_out_quality_and_calibration(split, scorer):
    """On test queries the scorer ranks right answers above wrong ones and is calibrated."""
    _, test = split
    X, y = _frame(test, "small")
    p = scorer.predict_proba(X)
    assert p.shape == (len(y), 2) and np.allclose(p.sum(axis=1), 1.0)
    assert roc_auc_score(y, p[:, 1]) > 0.8
    assert abs(p[:, 1].mean() - y.mean()) < 0.1


def test_agreement_with_an_earlier_rung_moves_the_score(split, scorer):
    """Seeing that a stronger earlier rung gave the same answer raises P(acceptable)."""
    _, test = split
    X0, y = _frame(test, "medium")
    X1, _ = _frame(test, "medium", earlier_model="large")
    p0, p1 = scorer.predict_proba(X0)[:, 1], scorer.predict_proba(X1)[:, 1]
    assert roc_auc_score(y, p1) > roc_auc_score(y, p0)
    A = agreement_matrix(test.responses)
    agree = A[:, test.models.index("medium"), test.models.index("large")] == 1
    assert p1[agree].mean() > p0[agree].mean() and p1[~agree].mean() < p0[~agree].mean()


def test_score_grid_matches_predict_proba(split, scorer):
    _, test = split
    A = agreement_matrix(test.responses)
    s1, s2 = scorer.score_grid(test.queries, test.responses, test.models, A)
    m, a = test.models.index("medium"), test.models.index("small")
    np.testing.assert_allclose(s1[:, m], scorer.predict_proba(_frame(test, "medium")[0])[:, 1])
    np.testing.assert_allclose(s2[:, m, a],
                               scorer.predict_proba(_frame(test, "medium", "small")[0])[:, 1])
    assert np.isnan(s2[:, m, m]).all()


def test_score_grid_in_blocks_of_queries_is_the_whole_grid(split, scorer, monkeypatch):
    """score_grid scores a block of queries at a time (memory); every number is the same."""
    _, test = split
    A = agreement_matrix(test.responses)
    whole = scorer.score_grid(test.queries, test.responses, test.models, A)
    monkeypatch.setattr(type(scorer), "_grid_block", 7)
    assert len(test.queries) > 3 * 7  # several blocks, the last one short
    blocks = scorer.score_grid(test.queries, test.responses, test.models, A)
    for w, b in zip(whole, blocks, strict=True):
        np.testing.assert_array_equal(w, b)


@pytest.mark.parametrize("params", [{"learner": "logistic", "calibration": "isotonic"},
                                    {"learner": "hgb", "max_iter": 60}])
def test_save_load_identical_predictions(tmp_path, split, params):
    train, test = split
    s = fit_scorer(train, params)
    s.save(tmp_path / "s")
    t = AnswerScorer.load(tmp_path / "s")
    X, _ = _frame(test, "small", earlier_model="medium")
    np.testing.assert_array_equal(s.predict_proba(X), t.predict_proba(X))
    assert t.get_params() == s.get_params()


def test_exported_trees_match_sklearn():
    """Our array traversal of HistGradientBoosting trees equals sklearn's own decision values."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ponder.scorers._combiners import export_trees as _export_trees
    from ponder.scorers._combiners import tree_decision as _tree_decision

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = ((np.nan_to_num(X[:, 0]) + X[:, 1] ** 2 > 0.5) ^ (rng.random(600) < 0.1)).astype(int)
    hgb = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(X, y)
    Xt = rng.normal(size=(300, 5))
    Xt[rng.random(Xt.shape) < 0.05] = np.nan
    np.testing.assert_allclose(_tree_decision(_export_trees(hgb), Xt), hgb.decision_function(Xt),
                               atol=1e-10)


def test_tampered_or_foreign_scorer_is_refused(tmp_path, scorer):
    d = scorer.save(tmp_path / "s")
    AnswerScorer.load(d)  # intact: loads
    meta = json.loads((d / "meta.json").read_text())
    meta["meta"]["params"]["C"] = 123.0
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="content hash mismatch"):
        AnswerScorer.load(d)
    d2 = scorer.save(tmp_path / "s2")
    meta = json.loads((d2 / "meta.json").read_text())
    meta["format_version"] = 3
    (d2 / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="format version 3 is not supported"):
        AnswerScorer.load(d2)


@pytest.mark.slow
def test_minilm_query_features_round_trip(tmp_path, split):
    from ponder._features import embedder_available

    if not embedder_available():
        pytest.skip("extra 'embed' not installed")
    train, test = split
    s = fit_scorer(train, {"text": "embed"})
    X, y = _frame(test, "small")
    p = s.predict_proba(X)[:, 1]
    assert roc_auc_score(y, p) > 0.7
    s.save(tmp_path / "e")
    np.testing.assert_array_equal(AnswerScorer.load(tmp_path / "e").predict_proba(X)[:, 1], p)
