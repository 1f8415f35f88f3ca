"""Agreement rungs: a set of models whose answers are compared, two first, the third on disagreement.

:func:`set_state` is the whole policy, pure, so the live loops, the replay and the optimizer
(:func:`set_outcomes`) cannot drift; :class:`Acceptor` learns from the agreement pattern whether
the majority answer is acceptable. Answers compare by the graders' extractors or, for free text, by
similarity (token Jaccard, or MiniLM embedding cosine with ``text_method="embed"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from .._answers import extract_answer, extract_choice, extract_number
from .._exceptions import ConfigError, ModelFileError, NotFittedError
from ..strategies import live_spec

__all__ = ["Acceptor", "AgreementSet", "SetState", "answer_key", "set_outcomes", "set_state"]

COMPARE = ("auto", "choice", "number", "exact", "text")
TEXT_METHODS = ("tokens", "embed")
DEFAULT_SAME_AT = {"tokens": 0.5, "embed": 0.85}
_CLIP = 6.0  # reliabilities enter as log-odds clipped to ±6


# ---- comparing answers ------------------------------------------------------------------------
@lru_cache(maxsize=1 << 16)  # the optimizer compares the same recorded answers for every set
def answer_key(text: str | None, compare: str) -> str | None:
    """The normalised answer ``compare`` extracts from ``text``; None for free text / no answer."""
    if text is None:
        return None
    if compare == "choice":
        return extract_choice(text)
    if compare == "number":
        v = extract_number(text)
        return None if v is None else repr(round(v, 9))
    if compare == "exact":
        from ..grading import normalize_text

        return normalize_text(text)
    if compare == "auto":
        return extract_answer(text)
    return None  # "text": always compared by similarity


@lru_cache(maxsize=4096)
def _embedding(text: str) -> np.ndarray:
    return np.asarray(_embedder().transform([text])[0], dtype=np.float64)


@lru_cache(maxsize=1)
def _embedder() -> Any:
    from .._features import SentenceEmbedder

    return SentenceEmbedder()


def text_similarity(a: str, b: str, method: str) -> float:
    """Similarity of two free-text answers in [0, 1] (token Jaccard or embedding cosine)."""
    if not a.strip() or not b.strip():
        return 0.0
    if method == "embed":
        return float(max(0.0, min(1.0, _embedding(a) @ _embedding(b))))
    from .._features import _jaccard

    return _jaccard(_token_set(a), _token_set(b))


@lru_cache(maxsize=1 << 14)
def _token_set(text: str) -> frozenset[str]:
    from .._features import _tokens

    return _tokens(text)


@dataclass(frozen=True)
class AgreementSet:
    """A set rung's members (table model names, in call order; ``specs``: their live specs) and how
    their answers compare; without an ``acceptor`` the score is the majority's share of the set."""

    members: tuple[str, ...]
    specs: tuple[str, ...] | None = None
    compare: str = "auto"
    text_method: str = "tokens"
    same_at: float | None = None  # free text: same answer when similarity ≥ this
    concurrent: bool = False
    stop_early: bool = True
    acceptor: Acceptor | None = None

    def __post_init__(self) -> None:
        if not 2 <= len(self.members) <= 3:
            raise ConfigError(f"an agreement set has 2 or 3 members, got {len(self.members)}")
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"an agreement set's members must differ: {self.members}")
        if self.specs is not None and len(self.specs) != len(self.members):
            raise ConfigError("an agreement set needs one spec per member")
        if self.compare not in COMPARE:
            raise ConfigError(f"compare must be one of {COMPARE}, got {self.compare!r}")
        if self.text_method not in TEXT_METHODS:
            raise ConfigError(f"text_method must be one of {TEXT_METHODS}, got {self.text_method!r}")
        if self.acceptor is not None and hasattr(self.acceptor, "coef_") and (
                self.acceptor.coef_.size != n_features(len(self.members))):
            raise ConfigError(f"the acceptor takes {self.acceptor.coef_.size} features, but a set "
                              f"of {len(self.members)} has {n_features(len(self.members))}")

    @property
    def name(self) -> str:
        return "{" + " + ".join(self.members) + "}"

    def spec(self, j: int) -> str:
        return self.specs[j] if self.specs is not None else live_spec(self.members[j])

    def same(self, a: str, b: str, key_a: str | None, key_b: str | None) -> tuple[bool, float]:
        """(same answer?, similarity) of two successful member answers."""
        if key_a is not None and key_b is not None:
            return key_a == key_b, float(key_a == key_b)
        if self.compare in ("choice", "number", "exact"):
            return False, 0.0  # one has no answer the extractor recognises
        s = text_similarity(a, b, self.text_method)
        at = DEFAULT_SAME_AT[self.text_method] if self.same_at is None else float(self.same_at)
        return s >= at, s

    def to_json(self) -> dict[str, Any]:
        acc = {} if self.acceptor is None else {"acceptor": self.acceptor.to_json()}
        return {"members": list(self.members), "compare": self.compare,
                "text_method": self.text_method, "same_at": self.same_at,
                "concurrent": self.concurrent, "stop_early": self.stop_early, **acc}

    @classmethod
    def from_json(cls, d: Any, *, specs: tuple[str, ...] | None = None,
                  where: str = "agree") -> AgreementSet:
        if not isinstance(d, dict):
            raise ConfigError(f"{where} must be an object")
        members = d.get("members")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ConfigError(f"{where}.members must be a list of model names")
        same_at = d.get("same_at")
        if same_at is not None and not isinstance(same_at, (int, float)):
            raise ConfigError(f"{where}.same_at must be a number")
        acc = d.get("acceptor")
        return cls(
            members=tuple(members), specs=specs, compare=str(d.get("compare", "auto")),
            text_method=str(d.get("text_method", "tokens")), same_at=same_at,
            concurrent=bool(d.get("concurrent", False)), stop_early=bool(d.get("stop_early", True)),
            acceptor=None if acc is None else Acceptor.from_json(acc, where=f"{where}.acceptor"),
        )


# ---- the pure set policy ----------------------------------------------------------------------
@dataclass(frozen=True)
class SetState:
    next: tuple[int, ...]  # member indices to call now (empty: done)
    answer: int | None = None  # position (in the results given) of the answer to give
    score: float | None = None  # P(acceptable) of that answer (acceptor, or majority share)
    features: np.ndarray | None = None
    majority: tuple[int, ...] = ()  # positions of the members in the majority cluster


Result = tuple[int, str | None, float | None]  # (member index, text or None if failed, reliability)


def _clusters(agree: AgreementSet, results: Sequence[Result]) -> tuple[list[list[int]], float]:
    """Greedy clusters in call order (an answer joins the first whose first answer it matches) and
    the mean pairwise similarity."""
    ok = [i for i, r in enumerate(results) if r[1] is not None]
    keys = {i: answer_key(results[i][1], agree.compare) for i in ok}
    clusters: list[list[int]] = []
    sims: list[float] = []
    pair: dict[tuple[int, int], bool] = {}
    for x, i in enumerate(ok):
        for j in ok[:x]:
            same, s = agree.same(str(results[i][1]), str(results[j][1]), keys[i], keys[j])
            pair[(j, i)] = same
            sims.append(s)
        for c in clusters:
            if pair[(c[0], i)]:
                c.append(i)
                break
        else:
            clusters.append([i])
    return clusters, (float(np.mean(sims)) if sims else 0.0)


def _logit(p: float | None) -> float:
    if p is None or not math.isfinite(p):
        return 0.0
    p = min(max(p, 1e-6), 1 - 1e-6)
    return max(-_CLIP, min(_CLIP, math.log(p / (1 - p))))


def n_features(k: int) -> int:
    return 7 + 3 * k


def pattern_features(k: int, results: Sequence[Result], clusters: list[list[int]],
                     major: list[int], similarity: float) -> np.ndarray:
    """The agreement pattern as the acceptor's input (``major``: the majority cluster)."""
    f = np.zeros(n_features(k))
    ok = [i for i, r in enumerate(results) if r[1] is not None]
    sizes = sorted((len(c) for c in clusters), reverse=True)
    top = sizes[0] if sizes else 0
    second = sizes[1] if len(sizes) > 1 else 0
    f[0] = len(results) / k  # share of members called
    f[1] = top / k  # majority votes over set size
    f[2] = (top - second) / k  # vote margin
    f[3] = float(len(ok) >= 2 and top == len(ok))  # every successful answer agrees
    f[4] = float(top <= 1)  # no two answers agree
    f[5] = similarity
    rel_major = [_logit(results[i][2]) for i in major]
    f[6] = max(rel_major) if rel_major else 0.0
    for i, (member, text, rel) in enumerate(results):
        if text is None:
            continue
        if i in major:
            f[7 + member] = 1.0  # which members agree
            f[7 + k + member] = _logit(rel)  # their reliability on this query
        else:
            f[7 + 2 * k + member] = _logit(rel)  # the dissenters' reliability
    return f


def _best_rel(results: Sequence[Result], members: list[int]) -> float:
    rels = [results[i][2] for i in members]
    return max((r for r in rels if r is not None and math.isfinite(r)), default=-1.0)


def set_state(agree: AgreementSet, results: Sequence[Result]) -> SetState:
    """Pure: members to call next, or the set's answer, features and acceptance probability
    (``results``: the member attempts so far, in call order)."""
    k = len(agree.members)
    called = {r[0] for r in results}
    todo = tuple(j for j in range(k) if j not in called)
    if not agree.stop_early:
        if todo:
            return SetState(next=todo if agree.concurrent or not results else todo[:1])
    elif not results:  # (a set has 2 or 3 members)
        return SetState(next=todo[:2] if agree.concurrent else todo[:1])
    clusters, sim = _clusters(agree, results)
    top = max((len(c) for c in clusters), default=0)
    if todo and agree.stop_early and top <= k // 2:  # no strict majority of the set yet
        if len(results) < 2 and agree.concurrent:
            return SetState(next=todo[: 2 - len(results)])
        return SetState(next=todo[:1])
    if not clusters:
        return SetState(next=(), answer=None, score=None)
    major = max(clusters, key=lambda c: (len(c), _best_rel(results, c)))  # ties: most reliable
    feats = pattern_features(k, results, clusters, major, sim)
    if agree.acceptor is not None:
        score = float(agree.acceptor.predict_proba(feats[None])[0])
    else:
        score = len(major) / k
    # the answer given: the most reliable majority member, then the first called
    answer = max(major, key=lambda i: (_best_rel(results, [i]), -i))
    return SetState(next=(), answer=answer, score=score, features=feats, majority=tuple(major))


# ---- the learned acceptance -------------------------------------------------------------------
Head = tuple[np.ndarray, float, "tuple[float, float] | None"]  # coef, intercept, Platt (a, b)


def _fit_head(Z: np.ndarray, labels: np.ndarray, C: float, cv: int, seed: int) -> Head:
    """Logistic regression, Platt-calibrated on its out-of-fold decisions (as the scorers are)."""
    from sklearn.linear_model import LogisticRegression

    from ..scorers._combiners import fit_calibrator

    if labels.min() == labels.max():  # one class: a constant
        return np.zeros(Z.shape[1]), _logit(float(labels[0])), None
    cal = None
    if cv >= 2 and len(labels) >= 4 * cv:
        oof = np.zeros(len(labels))
        folds = np.random.default_rng(seed).permutation(len(labels)) % cv
        for f in range(cv):
            tr, te = folds != f, folds == f
            if labels[tr].min() == labels[tr].max():
                continue
            m = LogisticRegression(C=C, max_iter=500).fit(Z[tr], labels[tr])
            oof[te] = m.decision_function(Z[te])
        _, a, b = fit_calibrator("sigmoid", oof, labels)
        cal = (float(a[0]), float(b[0]))
    lr = LogisticRegression(C=C, max_iter=500).fit(Z, labels)
    return np.asarray(lr.coef_[0], dtype=np.float64), float(lr.intercept_[0]), cal


def _head_proba(head: Head, Z: np.ndarray) -> np.ndarray:
    from ..scorers._combiners import sigmoid

    coef, intercept, cal = head
    d = Z @ coef + intercept
    return sigmoid(d if cal is None else cal[0] * d + cal[1])


class Acceptor:
    """P(majority answer acceptable | agreement pattern): Platt-calibrated logistic regression.

    With ``y_ref`` (the correctness of the model a rejected query goes to) the score becomes the
    gain ``0.5 + (P(set right) − P(reference right)) / 2``: accept where the set is likely right
    *and* the strong model likely wrong. Plain numbers in JSON, so a strategy file carries it.
    """

    def __init__(self, C: float = 1.0, cv: int = 3, random_state: int = 0) -> None:
        self.C = C
        self.cv = cv
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, y_ref: np.ndarray | None = None) -> Acceptor:
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        Z = (X - self.mean_) / self.scale_
        labels = (np.asarray(y, dtype=np.float64) >= 0.5).astype(np.int64)
        self.coef_, self.intercept_, self.calibration_ = _fit_head(
            Z, labels, self.C, self.cv, self.random_state)
        self.ref_: Head | None = None
        if y_ref is not None:
            ref = (np.nan_to_num(np.asarray(y_ref, dtype=np.float64), nan=0.0) >= 0.5)
            self.ref_ = _fit_head(Z, ref.astype(np.int64), self.C, self.cv, self.random_state)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this Acceptor is not fitted yet; call fit(X, y) first")
        X = np.asarray(X, dtype=np.float64)
        if X.shape[1] != self.coef_.size:
            raise ConfigError(f"the acceptor expects {self.coef_.size} features, got {X.shape[1]}")
        Z = np.asarray((X - self.mean_) / self.scale_)
        p = _head_proba((self.coef_, self.intercept_, self.calibration_), Z)
        if self.ref_ is not None:
            p = 0.5 + 0.5 * (p - _head_proba(self.ref_, Z))
        return p

    def to_json(self) -> dict[str, Any]:
        def head(h: Head) -> dict[str, Any]:
            return {"coef": h[0].tolist(), "intercept": h[1],
                    "calibration": None if h[2] is None else list(h[2])}

        d = {"type": "logistic", "mean": self.mean_.tolist(), "scale": self.scale_.tolist(),
             **head((self.coef_, self.intercept_, self.calibration_))}
        if self.ref_ is not None:
            d["reference"] = head(self.ref_)
        return d

    @classmethod
    def from_json(cls, d: Any, *, where: str = "acceptor") -> Acceptor:
        def vec(obj: dict[str, Any], key: str, at: str) -> np.ndarray:
            v = obj.get(key)
            if not isinstance(v, list) or not all(isinstance(x, (int, float)) for x in v):
                raise ModelFileError(f"{at}.{key} must be a list of numbers")
            return np.asarray(v, dtype=np.float64)

        def head(obj: Any, at: str) -> Head:
            if not isinstance(obj, dict):
                raise ModelFileError(f"{at} must be an object")
            coef = vec(obj, "coef", at)
            ic = obj.get("intercept")
            if not isinstance(ic, (int, float)):
                raise ModelFileError(f"{at}.intercept must be a number")
            cal = obj.get("calibration")
            if cal is not None and not (isinstance(cal, list) and len(cal) == 2
                                        and all(isinstance(x, (int, float)) for x in cal)):
                raise ModelFileError(f"{at}.calibration must be [a, b] or null")
            return coef, float(ic), None if cal is None else (float(cal[0]), float(cal[1]))

        if not isinstance(d, dict) or d.get("type") != "logistic":
            raise ModelFileError(f"{where} must be an object with type 'logistic'")
        obj = cls()
        obj.mean_, obj.scale_ = vec(d, "mean", where), vec(d, "scale", where)
        obj.coef_, obj.intercept_, obj.calibration_ = head(d, where)
        obj.ref_ = None if d.get("reference") is None else head(d["reference"], f"{where}.reference")
        refs = [] if obj.ref_ is None else [obj.ref_[0].size]
        if len({obj.coef_.size, obj.mean_.size, obj.scale_.size, *refs}) != 1:
            raise ModelFileError(f"{where}: coef, mean and scale differ in length")
        if obj.coef_.size not in (n_features(2), n_features(3)):
            raise ModelFileError(f"{where}: {obj.coef_.size} features fit no set size")
        return obj


# ---- a set over an outcome table (the optimizer's and the replay's view) ----------------------
@dataclass
class SetOutcomes:
    cost: np.ndarray  # (Q,) sum of the called members' costs
    quality: np.ndarray  # (Q,) score of the answer given (0 when every member failed)
    answered: np.ndarray  # (Q,) bool: some member answered
    features: np.ndarray  # (Q, F)


def set_outcomes(agree: AgreementSet, responses: np.ndarray, present: np.ndarray,
                 scores: np.ndarray, costs: np.ndarray, reliability: np.ndarray) -> SetOutcomes:
    """:func:`set_state` on every query's recorded member answers ((Q, k) arrays in member order;
    a missing answer is a failed call)."""
    nq, k = responses.shape
    cost, qual = np.zeros(nq), np.zeros(nq)
    answered = np.zeros(nq, dtype=bool)
    feats = np.zeros((nq, n_features(k)))
    plain = replace(agree, acceptor=None)  # features only: no acceptor needed
    for q in range(nq):
        results: list[Result] = []
        while (st := set_state(plain, results)).next:
            for j in st.next:
                ok = bool(present[q, j])
                rel = float(reliability[q, j]) if ok and np.isfinite(reliability[q, j]) else None
                results.append((j, str(responses[q, j]) if ok else None, rel))
                if ok:
                    cost[q] += float(costs[q, j])
        if st.answer is not None:
            j = results[st.answer][0]
            answered[q] = True
            qual[q] = float(np.nan_to_num(scores[q, j], nan=0.0))
            assert st.features is not None
            feats[q] = st.features
    return SetOutcomes(cost, qual, answered, feats)
