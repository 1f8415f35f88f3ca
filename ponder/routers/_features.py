"""Which featurizer a router uses: a name, or any object with fit/transform (and, to be saved,
``to_state``/``from_state``)."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone

from .._exceptions import ConfigError
from .._features import TOKEN_RE, SentenceEmbedder, TextFeaturizer, kept_csr, prefixed
from .._features import featurizer_from_state as from_state


class TailEmbedder(BaseEstimator):  # type: ignore[misc]  # scikit-learn is untyped
    """MiniLM embeddings of each query's last ``max_chars`` characters: MiniLM reads at most 256
    word pieces, and in long prompts (few-shot, retrieved context) the question comes last."""

    def __init__(self, max_chars: int = 1000, fast: bool = False) -> None:
        self.max_chars = max_chars
        self.fast = fast  # 128 word pieces, int8 weights: for a p50 decision budget of ~15 ms

    def fit(self, texts: Any = None, y: Any = None) -> TailEmbedder:
        return self

    def transform(self, texts: list[str]) -> np.ndarray:
        emb = self.__dict__.get("_embedder")
        if emb is None:
            emb = self._embedder = (SentenceEmbedder(max_seq_length=128, quantize=True)
                                    if self.fast else SentenceEmbedder())
        return emb.transform([str(t)[-int(self.max_chars):] for t in texts])

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"type": "TailEmbedder", "params": {"max_chars": int(self.max_chars),
                                                   "fast": bool(self.fast)}}, {}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TailEmbedder:
        return cls(**meta.get("params", {}))


class ConcatFeaturizer(BaseEstimator):  # type: ignore[misc]  # scikit-learn is untyped
    """Side-by-side features (e.g. TF-IDF and MiniLM): one sparse matrix, blocks L2-normalised."""

    def __init__(self, parts: list[Any] | None = None) -> None:
        self.parts = parts

    def fit(self, texts: list[str], y: Any = None) -> ConcatFeaturizer:
        # fresh copies from their parameters (sklearn's clone is stricter than these need)
        self.parts_ = [type(p)(**p.get_params()).fit(texts) for p in (self.parts or [])]
        return self

    def transform(self, texts: list[str]) -> Any:
        fast = self.__dict__.setdefault("_fast", [FastTransform(p) for p in self.parts_])
        return sp.hstack([sp.csr_matrix(f.transform(texts)) for f in fast]).tocsr()

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        states = [p.to_state() for p in self.parts_]
        arrays = {f"p{i}_{k}": v for i, (_, a) in enumerate(states) for k, v in a.items()}
        return {"type": "ConcatFeaturizer", "parts": [m for m, _ in states]}, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> ConcatFeaturizer:
        obj = cls()
        obj.parts_ = [featurizer_from_state(m, prefixed(arrays, f"p{i}_"))
                      for i, m in enumerate(meta.get("parts", []))]
        obj.parts = obj.parts_
        return obj


#: the featurizers a router can be given by name
FEATURIZERS: dict[str, Callable[[], Any]] = {
    "tfidf": TextFeaturizer,
    "tfidf-hashed": partial(TextFeaturizer, hashed=True),
    "minilm": TailEmbedder,
    "minilm-fast": partial(TailEmbedder, max_chars=600, fast=True),
    "tfidf+minilm": lambda: ConcatFeaturizer([TextFeaturizer(), TailEmbedder()]),
}


def make_featurizer(spec: Any) -> Any:
    """A fresh featurizer for a name, or a copy of an object: routers never share, and refit, one."""
    if spec is None or isinstance(spec, str):
        if (spec or "tfidf") not in FEATURIZERS:
            raise ConfigError(f"unknown featurizer {spec!r}; use one of {', '.join(FEATURIZERS)} "
                              "or pass an object with fit/transform")
        return FEATURIZERS[spec or "tfidf"]()
    if not (hasattr(spec, "fit") and hasattr(spec, "transform")):
        raise ConfigError(f"featurizer {spec!r} needs fit(texts) and transform(texts)")
    if not hasattr(spec, "get_params"):  # not an sklearn estimator: a copy, never the object given
        return copy.deepcopy(spec)
    try:
        return clone(spec)
    except (RuntimeError, TypeError) as exc:  # a get_params that clone cannot use
        raise ConfigError(f"featurizer {type(spec).__name__} cannot be cloned ({exc}); its "
                          "get_params must return exactly what __init__ was given") from None


def featurizer_from_state(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    return from_state(meta, arrays, (TextFeaturizer, SentenceEmbedder, TailEmbedder,
                                     ConcatFeaturizer))


class FastTransform:
    """A fitted TextFeaturizer's features in well under a millisecond per query (its transform
    builds a CountVectorizer per call): the same arithmetic with one regex, identical numbers."""

    def __init__(self, featurizer: Any) -> None:
        self.featurizer = featurizer

    def transform(self, texts: list[str]) -> Any:
        f = self.featurizer
        if type(f).__name__ != "TextFeaturizer" or getattr(f, "hashed", True):
            return f.transform(texts)
        if len(texts) < 64:  # a live query: the loop is quicker than a key
            return self._transform(texts)
        return kept_csr(("fast", f.memo_key(), tuple(texts)), lambda: self._transform(texts))

    def _transform(self, texts: list[str]) -> Any:
        f = self.featurizer
        lo, hi = f.ngram_range
        vocab = f.vocabulary_
        indptr: list[int] = [0]
        indices: list[int] = []
        data: list[float] = []
        for text in texts:
            text = str(text)
            toks = TOKEN_RE.findall(text.lower() if f.lowercase else text)
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
