"""Which featurizer a router uses: a name, or any object with fit/transform (and, to be saved,
``to_state``/``from_state``). The featurizers themselves live in :mod:`ponder._features`."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .._exceptions import ConfigError, ModelFileError

FEATURIZERS = ("tfidf", "tfidf-hashed", "minilm")


def make_featurizer(spec: Any) -> Any:
    """A fresh, unfitted featurizer for ``spec`` ("tfidf" (default), "tfidf-hashed", "minilm")."""
    from .._features import SentenceEmbedder, TextFeaturizer

    if spec is None or spec == "tfidf":
        return TextFeaturizer()
    if spec == "tfidf-hashed":
        return TextFeaturizer(hashed=True)
    if spec == "minilm":
        return SentenceEmbedder()
    if isinstance(spec, str):
        raise ConfigError(f"unknown featurizer {spec!r}; use one of {', '.join(FEATURIZERS)} "
                          "or pass an object with fit/transform")
    if not (hasattr(spec, "fit") and hasattr(spec, "transform")):
        raise ConfigError(f"featurizer {spec!r} needs fit(texts) and transform(texts)")
    from sklearn.base import clone

    try:
        return clone(spec)
    except Exception:  # noqa: BLE001 - not an sklearn estimator: use it as given
        return spec


def featurizer_spec(spec: Any) -> str:
    """A JSON-able name for the featurizer parameter."""
    if spec is None or isinstance(spec, str):
        return spec or "tfidf"
    return type(spec).__name__


def featurizer_state(featurizer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not hasattr(featurizer, "to_state"):
        raise ConfigError(f"featurizer {type(featurizer).__name__} cannot be saved "
                          "(it has no to_state); use 'tfidf' or 'minilm'")
    return featurizer.to_state()


def featurizer_from_state(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    from .._features import SentenceEmbedder, TextFeaturizer

    kinds = {"TextFeaturizer": TextFeaturizer, "SentenceEmbedder": SentenceEmbedder}
    cls = kinds.get(str(meta.get("type")))
    if cls is None:
        raise ModelFileError(f"unknown featurizer type {meta.get('type')!r} in router file")
    return cls.from_state(meta, arrays)


class FastTransform:
    """Per-query speed for a fitted :class:`ponder._features.TextFeaturizer`.

    Its ``transform`` builds a CountVectorizer (and validates the vocabulary) on every call,
    several milliseconds per query; routing one query must take well under one. This keeps one
    vectorizer and repeats the same arithmetic (sublinear tf, idf, L2 rows), so the features
    are identical (a test checks that).
    """

    def __init__(self, featurizer: Any) -> None:
        self.featurizer = featurizer
        self._vec: Any = None

    def transform(self, texts: list[str]) -> Any:
        f = self.featurizer
        if type(f).__name__ != "TextFeaturizer" or getattr(f, "hashed", True):
            return f.transform(texts)
        import scipy.sparse as sp

        if self._vec is None:
            import re

            from .._features import _TOKEN

            self._vec = re.compile(_TOKEN)
        lo, hi = f.ngram_range
        vocab = f.vocabulary_
        indptr, indices, data = [0], [], []
        for text in texts:
            text = str(text)
            toks = self._vec.findall(text.lower() if f.lowercase else text)
            grams: list[str] = []
            for n in range(max(lo, 1), hi + 1):  # sklearn's word n-grams: tokens joined by " "
                grams += toks if n == 1 else [" ".join(toks[i:i + n])
                                              for i in range(len(toks) - n + 1)]
            counts_ = Counter(map(vocab.get, grams))
            counts_.pop(None, None)
            indices.extend(counts_)
            data.extend(counts_.values())
            indptr.append(len(indices))
        counts = sp.csr_matrix((np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int64),
                                np.asarray(indptr)), shape=(len(texts), len(f.idf_)))
        counts.sort_indices()
        if f.sublinear_tf:
            counts.data = np.log(counts.data) + 1.0
        counts.data *= f.idf_[counts.indices]
        norms = np.sqrt(np.bincount(np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr)),
                                    weights=counts.data ** 2, minlength=counts.shape[0]))
        norms[norms == 0] = 1.0
        counts.data /= np.repeat(norms, np.diff(counts.indptr))
        return counts
