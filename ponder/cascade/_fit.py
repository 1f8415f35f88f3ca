"""Train a cascade on an outcome table: cross-fitted scorers → frontier → chain → (certified) thresholds.

Thresholds are chosen on *out-of-fold* scores, so they do not fit memorised answers; the shipped
scorer is refitted on all fitting queries. With ``epsilon``, a held-out slice certifies them
(Learn-then-Test); with ``set_pool`` ≥ 2, sets of the cheapest models are candidate first rungs.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._exceptions import ConfigError, DataError, NotFittedError
from .._features import agreement_matrix
from .._memo import digest
from .._risk import ltt_select
from ..scorers import table_signals
from ..strategies import live_spec
from ._agreement import Acceptor, AgreementSet, set_outcomes
from ._cascade import Cascade
from ._optimize import ChainChoice, Frontier, optimize_chains
from ._policy import Rung
from ._signals import rung_signal_settings

if TYPE_CHECKING:
    from ..evaluation import OutcomeTable
    from ..scorers import AnswerScorer

__all__ = [
    "CascadeOptimizer",
    "certify",
    "crossfit_scores",
    "fit_scorer",
    "training_frame",
]


def training_frame(table: OutcomeTable, *, earlier_samples: int = 1, seed: int = 0
                   ) -> tuple[pd.DataFrame, np.ndarray]:
    """Scorer rows: each (query, model) alone, plus ``earlier_samples`` copies that see one other
    model's answer as an earlier rung (so the scorer learns what agreement means)."""
    if earlier_samples == 1:
        return _training_frame_one(table, seed=seed)
    return _training_frame_loop(table, earlier_samples=earlier_samples, seed=seed)


def _training_frame_loop(table: OutcomeTable, *, earlier_samples: int = 1, seed: int = 0
                         ) -> tuple[pd.DataFrame, np.ndarray]:
    from ..scorers import scorer_frame, signal_columns

    rng = np.random.default_rng(seed)
    R, models = table.responses, table.models
    es: list[list[tuple[str, str]]] = []
    at_q: list[int] = []
    at_m: list[int] = []
    for q in range(len(table.query_ids)):
        avail = np.flatnonzero(table.present[q])
        for m in avail:
            others = avail[avail != m]
            variants: list[list[tuple[str, str]]] = [[]]
            if others.size:
                variants += [[(models[a], str(R[q, a]))] for a in
                             rng.choice(others, size=min(earlier_samples, others.size),
                                        replace=False)]
            es += variants
            at_q += [q] * len(variants)
            at_m += [int(m)] * len(variants)
    X = scorer_frame([table.queries[q] for q in at_q],
                     [str(R[q, m]) for q, m in zip(at_q, at_m, strict=True)],
                     [models[m] for m in at_m], es, [table.query_ids[q] for q in at_q])
    return X.assign(**signal_columns(table, at_q, at_m)), table.scores[at_q, at_m].astype(float)


def _training_frame_one(table: OutcomeTable, *, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """The loop's rows and draws for one earlier answer, vectorised: ``rng.choice(others, 1,
    replace=False)`` draws as ``rng.integers(0, len(others))`` does (a test pins the two)."""
    from ..scorers import scorer_frame, signal_columns

    rng = np.random.default_rng(seed)
    Y, P, R = table.scores, table.present, table.responses
    queries, qids, models = table.queries, table.query_ids, table.models
    cq, cm = np.nonzero(P)  # every answer, query-major, models in table order (as the loop)
    n_avail = P.sum(axis=1)
    start = np.concatenate([[0], np.cumsum(n_avail)[:-1]]).astype(np.int64)
    pos = np.arange(len(cq)) - start[cq]  # the answer's place among its query's answers
    n_other = n_avail[cq] - 1
    draws = n_other > 0
    r = np.zeros(len(cq), dtype=np.int64)
    if draws.any():
        r[draws] = rng.integers(0, n_other[draws])
    other = cm[start[cq] + r + (r >= pos)]  # the r-th of the query's other answers
    n_var = 1 + draws.astype(np.int64)
    cell = np.repeat(np.arange(len(cq)), n_var)
    first = np.concatenate([[0], np.cumsum(n_var)[:-1]]).astype(np.int64)
    earlier = np.zeros(len(cell), dtype=bool)
    earlier[first[draws] + 1] = True
    at_q, at_m = cq[cell], cm[cell]
    es: list[list[tuple[str, str]]] = [[] for _ in range(len(cell))]
    for i, a, q in zip(np.flatnonzero(earlier).tolist(), other[cell[earlier]].tolist(),
                       at_q[earlier].tolist(), strict=True):
        es[i] = [(models[a], str(R[q, a]))]
    aq = at_q.tolist()
    X = scorer_frame([queries[q] for q in aq], [str(x) for x in R[at_q, at_m]],
                     [models[m] for m in at_m.tolist()], es, [qids[q] for q in aq])
    return X.assign(**signal_columns(table, at_q, at_m)), Y[at_q, at_m].astype(float)


def fit_scorer(table: OutcomeTable, params: dict[str, Any] | None = None, *, seed: int = 0
               ) -> AnswerScorer:
    """One scorer for every model of ``table``."""
    from ..scorers import AnswerScorer

    X, y = training_frame(table, seed=seed)
    params = dict(params or {})
    if not any(str(r) for r in table.responses.ravel()[:5000]):
        params.setdefault("response_text", False)  # no responses recorded: judge by query only
    try:
        return AnswerScorer(**params).fit(X, y)
    except ValueError as exc:
        raise DataError(f"cannot train a scorer: {exc}", file=table.name) from None


def crossfit_scores(table: OutcomeTable, params: dict[str, Any] | None = None, *, folds: int = 5,
                    seed: int = 0, agree: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold :meth:`AnswerScorer.score_grid` ``(s1, s2)`` for every train query."""
    nq, nm = table.scores.shape
    if folds < 2 or nq < folds:
        raise ConfigError(f"cross-fitting needs ≥ 2 folds and ≥ {folds} queries, got {nq}")
    A = agreement_matrix(table.responses) if agree is None else agree
    S = table_signals(table)
    fold_of = np.random.default_rng(seed).permutation(nq) % folds
    s1, s2 = np.full((nq, nm), np.nan), np.full((nq, nm, nm), np.nan)
    ids = np.array(table.query_ids, dtype=object)
    for k in range(folds):
        te = np.flatnonzero(fold_of == k)
        tr_table = table.subset(list(ids[fold_of != k]))
        scorer = fit_scorer(tr_table, params, seed=seed + k)
        g1, g2 = scorer.score_grid([table.queries[i] for i in te], table.responses[te],
                                   table.models, A[te], S[te])
        s1[te], s2[te] = g1, g2
    return s1, s2


# ``ponder eval``'s "cascade" and "route-cascade" cross-fit the same scorer on the same rows (the
# largest part of the run): fits are kept by the tables' contents, and equal fits get copies.
_SCORER_CACHE: OrderedDict[Any, tuple[np.ndarray, np.ndarray, Any]] = OrderedDict()
_SCORER_LOCK = threading.Lock()
SCORER_CACHE_SIZE = 6  # the full train fit and up to five folds; 0 turns the sharing off


def clear_scorer_cache() -> None:
    _SCORER_CACHE.clear()


def _scorer_work(table: OutcomeTable, params: dict[str, Any] | None, *, folds: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray, AnswerScorer]:
    import copy

    key = None
    if SCORER_CACHE_SIZE > 0:  # everything of ``table`` the fits read (see training_frame)
        key = (digest(table.scores, table.costs, table.present, table.logprob_mean,
                      table.logprob_min), tuple(table.query_ids), tuple(table.models),
               tuple(table.queries), tuple(str(r) for r in table.responses.ravel()),
               tuple(table.samples.ravel().tolist()), repr(sorted((params or {}).items())),
               folds, seed)
    with _SCORER_LOCK:  # ``ponder eval`` fits fold copies on threads
        hit = _SCORER_CACHE.get(key)  # (None is never a key)
        if hit is not None:
            _SCORER_CACHE.move_to_end(key)
    if hit is None:
        s1, s2 = crossfit_scores(table, params, folds=folds, seed=seed)
        hit = (s1, s2, fit_scorer(table, params, seed=seed))
        if key is not None:
            with _SCORER_LOCK:
                _SCORER_CACHE[key] = hit
                while len(_SCORER_CACHE) > SCORER_CACHE_SIZE:
                    _SCORER_CACHE.popitem(last=False)
    return hit[0].copy(), hit[1].copy(), copy.deepcopy(hit[2])


@dataclass
class Certificate:
    epsilon: float
    delta: float
    method: str
    n_calibration: int
    scale: float | None  # threshold path position chosen (None: nothing certified)
    drop_on_calibration: float | None


def certify(cascade: Cascade, calibration: OutcomeTable, *, epsilon: float, delta: float,
            method: str = "wsr", max_scale: float = 2.0, steps: int = 41
            ) -> tuple[Cascade, Certificate]:
    """The most aggressive point on the thresholds' path from 'always escalate' past the
    optimizer's choice whose drop against the last rung is ≤ ε w.p. ≥ 1−δ (Learn-then-Test)."""
    base = tuple(r.threshold for r in cascade.rungs[:-1])
    scales = np.linspace(0.0, max_scale, steps)
    last = calibration.models.index(cascade.rungs[-1].model)
    y_last = np.nan_to_num(calibration.scores[:, last], nan=0.0)
    scores = cascade.rung_scores(calibration) if len(cascade.rungs) > 1 else None
    losses = np.zeros((len(calibration.query_ids), steps))
    variants = []
    for j, s in enumerate(scales):
        # s = 0: never accept (a threshold above any probability); s = 1: the optimizer's
        th = [2.0 if s <= 0 else float(1.0 - s * (1.0 - min(t, 1.0))) for t in base]
        rungs = [replace(r, threshold=t) for r, t in zip(cascade.rungs[:-1], th, strict=True)]
        variant = Cascade([*rungs, cascade.rungs[-1]], budget_usd=cascade.budget_usd,
                          name=cascade.name, info=dict(cascade.info))
        _, qual, _ = variant.replay(calibration, scores)
        losses[:, j] = y_last - qual
        variants.append(variant)
    sel = ltt_select(np.clip(losses, -1, 1), epsilon, delta, method=method, signed=True)
    i = sel.index
    chosen = variants[0 if i is None else i]
    cert = Certificate(epsilon, delta, method, sel.n, None if i is None else float(scales[i]),
                       None if i is None else float(sel.risks[i]))
    chosen.info["guarantee"] = {
        "epsilon": epsilon, "delta": delta, "method": method, "n_calibration": cert.n_calibration,
        "certified": cert.scale is not None, "path_scale": cert.scale,
        "drop_on_calibration": cert.drop_on_calibration,
        "reference_model": cascade.rungs[-1].model,
    }
    return chosen, cert


@dataclass(kw_only=True, eq=False, repr=False)
class CascadeOptimizer:
    """Cross-fitted scorers and the cost–quality frontier of all chains; ``cascade(budget=…)`` /
    ``cascade(target=…)`` picks one. ``calibration_fraction`` sets queries aside for
    :func:`certify`; ``set_pool`` ≥ 2 adds agreement rungs (``sets_``) of the cheapest models, which
    a choice's chain indexes after ``models_``.
    """

    max_length: int = 3
    n_thresholds: int = 32
    folds: int = 5
    scorer_params: dict[str, Any] | None = None
    calibration_fraction: float = 0.0
    models: list[str] | None = None
    seed: int = 0
    set_pool: int = 0
    max_set_size: int = 3
    set_compare: str = "auto"
    set_text_method: str = "tokens"
    set_relative: bool = False

    def _candidate_sets(self, mean_cost: np.ndarray) -> list[tuple[int, ...]]:
        pool = [int(m) for m in np.argsort(mean_cost, kind="stable")[: self.set_pool]]
        out: list[tuple[int, ...]] = []
        for size in range(2, min(self.max_set_size, len(pool)) + 1):
            for combo in itertools.combinations(pool, size):
                if size == 2:
                    out.append(combo)
                    continue
                for third in combo:  # which member waits for a disagreement
                    first = sorted((m for m in combo if m != third), key=lambda m: mean_cost[m])
                    out.append((*first, third))
        return out

    def _fit_sets(self, table: OutcomeTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nq = len(table.query_ids)
        mean_cost = np.nanmean(table.costs, axis=0)
        fold_of = np.random.default_rng(self.seed + 11).permutation(nq) % self.folds
        # set_relative: score the gain over the most accurate model (where a rejection goes)
        y_ref = table.scores[:, int(np.argmax(np.nanmean(table.scores, axis=0)))] \
            if self.set_relative else None
        self.sets_: list[AgreementSet] = []
        cols_s, cols_y, cols_c, costs = [], [], [], []
        for members in self._candidate_sets(mean_cost):
            cols = list(members)
            plain = AgreementSet(tuple(self.models_[m] for m in cols), compare=self.set_compare,
                                 text_method=self.set_text_method)
            out = set_outcomes(plain, table.responses[:, cols], table.present[:, cols],
                               table.scores[:, cols], table.costs[:, cols], self.s1_[:, cols])
            score = np.full(nq, -np.inf)  # no answer: never accepted
            ok = out.answered
            for k in range(self.folds):
                tr, te = ok & (fold_of != k), ok & (fold_of == k)
                if te.any() and tr.sum() >= 10:
                    score[te] = Acceptor(random_state=self.seed).fit(
                        out.features[tr], out.quality[tr],
                        None if y_ref is None else y_ref[tr]).predict_proba(out.features[te])
            acceptor = Acceptor(random_state=self.seed).fit(
                out.features[ok], out.quality[ok], None if y_ref is None else y_ref[ok]) \
                if ok.sum() >= 10 else None
            self.sets_.append(replace(plain, acceptor=acceptor))
            cols_s.append(score)
            cols_y.append(np.where(ok, out.quality, np.nan))
            cols_c.append(out.cost)
            costs.append(float(out.cost.mean()))
        self.set_cost_ = np.array(costs)
        s, y, c = (np.column_stack(v) if v else np.zeros((nq, 0)) for v in (cols_s, cols_y, cols_c))
        self.set_s1_ = s  # out-of-fold
        return s, y, c

    def fit(self, train: OutcomeTable) -> CascadeOptimizer:
        if self.models:
            unknown = [m for m in self.models if m not in train.models]
            if unknown:
                raise ConfigError(f"model(s) not in the table: {', '.join(unknown)}")
            train = train.select_models(self.models)
        if len(train.models) < 1:
            raise DataError("the table has no models", file=train.name)
        fit_table = train
        self.calibration_: OutcomeTable | None = None
        if self.calibration_fraction > 0:
            ids = np.array(train.query_ids, dtype=object)
            perm = np.random.default_rng(self.seed + 7).permutation(len(ids))
            n_cal = int(round(len(ids) * self.calibration_fraction))
            if n_cal < 20 or len(ids) - n_cal < 2 * self.folds:
                raise DataError(f"{len(ids)} train queries are too few to hold out "
                                f"{self.calibration_fraction:.0%} for calibration", file=train.name)
            cal = set(ids[perm[:n_cal]])
            self.calibration_ = train.subset([q for q in train.query_ids if q in cal])
            fit_table = train.subset([q for q in train.query_ids if q not in cal])
        self.train_ = fit_table
        self.models_ = list(fit_table.models)
        if len(self.models_) == 1:
            nq = len(fit_table.query_ids)
            self.s1_, self.s2_ = np.zeros((nq, 1)), np.full((nq, 1, 1), np.nan)
            self.scorer_ = None
        else:
            self.s1_, self.s2_, self.scorer_ = _scorer_work(fit_table, self.scorer_params,
                                                            folds=self.folds, seed=self.seed)
        self.sets_, self.set_cost_ = [], np.zeros(0)
        self.set_s1_ = np.zeros((len(fit_table.query_ids), 0))
        s1, Y, C = self.s1_, fit_table.scores, fit_table.costs
        if self.set_pool >= 2 and len(self.models_) >= 2:
            ss, sy, sc = self._fit_sets(fit_table)
            s1, Y, C = np.hstack([s1, ss]), np.hstack([Y, sy]), np.hstack([C, sc])
        self.frontier_: Frontier = optimize_chains(
            s1, self.s2_, Y, C, max_length=min(self.max_length, len(self.models_)),
            n_thresholds=self.n_thresholds, n_first_only=len(self.sets_))
        self.mean_cost_ = np.nanmean(fit_table.costs, axis=0)
        return self

    def describe(self, chain: Sequence[int]) -> list[str]:
        """Readable names of a choice's rungs (a model, or ``{a + b + c}`` for a set)."""
        n = len(self.models_)
        return [self.models_[m] if m < n else self.sets_[m - n].name for m in chain]

    def replay_scores(self, chain: Sequence[int], s1: np.ndarray, s2: np.ndarray
                      ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """A chain's rung scores and set members' reliabilities for :meth:`Cascade.replay`."""
        n = len(self.models_)
        scores = np.full((s1.shape[0], len(chain)), np.nan)
        members: dict[int, np.ndarray] = {}
        for k, m in enumerate(chain):
            if m >= n:
                cols = [self.models_.index(x) for x in self.sets_[m - n].members]
                members[k] = s1[:, cols]
            elif k == len(chain) - 1:
                continue
            elif k == 0:
                scores[:, k] = s1[:, m]
            elif chain[k - 1] < n:
                scores[:, k] = s2[:, m, chain[k - 1]]
        return scores, members

    def score_table(self, test: OutcomeTable) -> tuple[OutcomeTable, np.ndarray, np.ndarray]:
        """``test`` on ``models_`` and its ``score_grid`` in that order (zeros without a scorer)."""
        test = test.select_models(self.models_)
        order = [test.models.index(m) for m in self.models_]
        nq, nm = len(test.query_ids), len(order)
        if self.scorer_ is None:
            return test, np.zeros((nq, nm)), np.zeros((nq, nm, nm))
        g1, g2 = self.scorer_.score_grid(test.queries, test.responses, test.models,
                                         agreement_matrix(test.responses), table_signals(test))
        return test, g1[:, order], g2[:, order][:, :, order]

    def choose(self, *, budget: float | None = None, target: float | None = None
               ) -> ChainChoice:
        if not hasattr(self, "frontier_"):
            raise NotFittedError("CascadeOptimizer is not fitted yet; call fit(train) first")
        if (budget is None) == (target is None):
            raise ConfigError("give exactly one of budget (USD per query) or target quality")
        if budget is not None:
            choice = self.frontier_.best_for_budget(budget)
            if choice is None:
                cheapest = float(self.frontier_.cost.min())
                raise ConfigError(f"no cascade costs ≤ ${budget:.3g} per query on train; the "
                                  f"cheapest costs ${cheapest:.3g}", key="budget")
            return choice
        assert target is not None
        choice = self.frontier_.cheapest_for_quality(target)
        if choice is None:
            best = float(self.frontier_.quality.max())
            raise ConfigError(f"no cascade reaches quality {target:.3f} on train; the best "
                              f"reaches {best:.3f}", key="target_quality")
        return choice

    def build(self, choice: ChainChoice, *, name: str = "cascade",
              model_map: dict[str, str] | None = None, budget_usd: float | None = None
              ) -> Cascade:
        rungs = []
        n = len(self.models_)
        for k, m in enumerate(choice.chain):
            last = k == len(choice.chain) - 1
            threshold = 1.0 if last else float(choice.thresholds[k])
            if m >= n:
                agree = self.sets_[m - n]
                agree = replace(agree, specs=tuple(live_spec(x, model_map) for x in agree.members))
                rungs.append(Rung(model=agree.name, threshold=threshold, scorer=self.scorer_,
                                  expected_cost_usd=float(self.set_cost_[m - n]), agree=agree))
                continue
            model = self.models_[m]
            samples, logprobs = rung_signal_settings(self.train_, model,
                                                     None if last else self.scorer_)
            rungs.append(Rung(model=model, threshold=threshold,
                              scorer=None if last else self.scorer_,
                              spec=live_spec(model, model_map),
                              expected_cost_usd=float(self.mean_cost_[m]), samples=samples,
                              logprobs=logprobs))
        info = {"expected": {"cost_usd": choice.cost, "quality": choice.quality,
                             "on": "train (out-of-fold scores)",
                             "n_queries": len(self.train_.query_ids)}}
        return Cascade(rungs, budget_usd=budget_usd, name=name, info=info)

    def cascade(self, *, budget: float | None = None, target: float | None = None,
                name: str = "cascade", model_map: dict[str, str] | None = None) -> Cascade:
        return self.build(self.choose(budget=budget, target=target), name=name,
                          model_map=model_map)
