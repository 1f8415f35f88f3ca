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


def _agreement_every_pair(resp: np.ndarray) -> np.ndarray:
    """agreement_matrix as it was written first: every pair of every query."""
    from ponder._features import _tokens, extract_answer

    q, m = resp.shape
    out = np.zeros((q, m, m), dtype=np.float32)
    for i in range(q):
        answers = [extract_answer(str(r)) if r else None for r in resp[i]]
        for j in range(m):
            out[i, j, j] = 1.0
            for k in range(j + 1, m):
                a, b = resp[i, j], resp[i, k]
                if not a or not b:
                    v = 0.0
                elif answers[j] is not None and answers[k] is not None:
                    v = 1.0 if answers[j] == answers[k] else 0.0
                else:
                    ta, tb = _tokens(str(a)), _tokens(str(b))
                    v = len(ta & tb) / len(ta | tb) if ta and tb else 0.0
                out[i, j, k] = out[i, k, j] = v
    return out


def test_agreement_matrix_looks_only_at_queries_with_two_answers_and_agrees_with_every_pair():
    rng = np.random.default_rng(4)
    words = ["", "", "A", "(B) because", "the answer is 42", "42", "yes", "no, it is not", "x y z"]
    resp = np.array(words, dtype=object)[rng.integers(0, len(words), (300, 5))]
    resp[:50] = ""  # queries with no answer recorded
    resp[50:60, 1:] = ""  # one answer only
    got = agreement_matrix(resp)
    assert got.tobytes() == _agreement_every_pair(resp).tobytes()
    assert np.array_equal(got[0], np.eye(5, dtype=np.float32))


def test_equal_fits_and_transforms_of_equal_texts_are_made_once_and_handed_out_as_copies(monkeypatch):
    import ponder._features as F
    from ponder.routers._features import FastTransform

    texts = [f"what is {w} number {i}" for i, w in enumerate(["alpha", "beta", "gamma"] * 40)]
    fits, transforms = [], []
    real_fit, real_transform = F.TextFeaturizer._fit, F.TextFeaturizer._transform
    monkeypatch.setattr(F.TextFeaturizer, "_fit", lambda self, t: fits.append(1) or real_fit(self, t))
    monkeypatch.setattr(F.TextFeaturizer, "_transform",
                        lambda self, t: transforms.append(1) or real_transform(self, t))
    a = F.TextFeaturizer(max_features=50).fit(texts)
    b = F.TextFeaturizer(max_features=50).fit(list(texts))
    assert len(fits) == 1 and a.vocabulary_ == b.vocabulary_ and a.vocabulary_ is not b.vocabulary_
    assert np.array_equal(a.idf_, b.idf_) and a.idf_ is not b.idf_
    F.TextFeaturizer(max_features=40).fit(texts)  # other parameters: another fit
    assert len(fits) == 2
    x = a.transform(texts)
    x.data[:] = 0.0  # the caller's copy
    y = b.transform(texts)
    assert len(transforms) == 1 and y.sum() > 0
    want = real_transform(a, texts)
    assert (y != want).nnz == 0
    fast = FastTransform(a).transform(texts)  # the routers' loop: its own entry, same numbers
    assert np.allclose(fast.toarray(), want.toarray(), rtol=0, atol=1e-15)
