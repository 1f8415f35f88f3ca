from __future__ import annotations

import numpy as np
import pytest

from ponder import _persist
from ponder._exceptions import NotFittedError
from ponder._features import (
    RESPONSE_STAT_NAMES,
    SentenceEmbedder,
    TextFeaturizer,
    agreement,
    agreement_matrix,
    embedder_available,
    extract_answer,
    response_stats,
)

DOCS = ["the cat sat on the mat", "dogs chase cats", "What is 2 + 2?", "the mat is red",
        "cats and dogs", "red cats sat"]


def test_tfidf_matches_sklearn_and_round_trips(tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer

    f = TextFeaturizer(min_df=1).fit(DOCS)
    ref = TfidfVectorizer(min_df=1, ngram_range=(1, 2), sublinear_tf=True,
                          token_pattern=r"(?u)\b\w+\b").fit(DOCS)
    new = ["the red cat", "unknown words only", "cats sat on dogs"]
    np.testing.assert_allclose(f.transform(new).toarray(), ref.transform(new).toarray(), atol=1e-12)
    meta, arrays = f.to_state()
    _persist.save(tmp_path / "f", meta, arrays)
    g = TextFeaturizer.from_state(*_persist.load(tmp_path / "f"))
    np.testing.assert_array_equal(g.transform(new).toarray(), f.transform(new).toarray())


def test_hashed_tfidf_and_not_fitted():
    with pytest.raises(NotFittedError):
        TextFeaturizer().transform(["x"])
    f = TextFeaturizer(hashed=True, n_hash=2**10).fit(DOCS)
    X = f.transform(["the cat", ""])
    assert X.shape == (2, 2**10)
    assert np.isclose(np.linalg.norm(X[0].toarray()), 1.0) and X[1].nnz == 0


@pytest.mark.parametrize("text,expected", [
    ("[Yes] because ... actually [No]", "no"),
    ("B", "b"),
    ("A) Kyle", "a"),
    ("(C)", "c"),
    ("The answer is 1,234.", "1234"),
    ("42", "42"),
    ("Here is a function:\n```python\ndef f():\n    return 1\n```", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_agreement_and_matrix():
    assert agreement("The answer is 12.", "12") == 1.0
    assert agreement("The answer is 12.", "The answer is 13.") == 0.0
    assert 0.0 < agreement("def f(x): return x+1", "def f(y): return y+1") < 1.0
    assert agreement("", "B") == 0.0
    A = agreement_matrix(np.array([["A", "(A) x", "B", ""]], dtype=object))
    assert A.shape == (1, 4, 4)
    np.testing.assert_array_equal(A[0], A[0].T)
    assert A[0, 0, 1] == 1.0 and A[0, 0, 2] == 0.0 and A[0, 3, 0] == 0.0 and A[0, 3, 3] == 1.0


def test_response_stats():
    S = response_stats(["q", "q"], ["I'm sorry, I cannot help with that.", "The answer is 4."])
    col = {n: i for i, n in enumerate(RESPONSE_STAT_NAMES)}
    assert S.shape == (2, len(RESPONSE_STAT_NAMES))
    assert S[0, col["refusal"]] == 1 and S[1, col["refusal"]] == 0
    assert S[0, col["format_match"]] == 0 and S[1, col["format_match"]] == 1
    with pytest.raises(ValueError):
        response_stats(["q"], [])


@pytest.mark.slow
@pytest.mark.skipif(not embedder_available(), reason="extra 'embed' not installed")
def test_minilm_embedder_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = SentenceEmbedder().fit()
    X = e.transform(["What is 2 + 2?", "What is two plus two?", "Translate this poem."])
    assert X.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert X[0] @ X[1] > X[0] @ X[2]  # paraphrases are closer than unrelated text
