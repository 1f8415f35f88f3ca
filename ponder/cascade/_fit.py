"""Train a cascade on an outcome table: cross-fitted scorers → frontier → chain → (certified) thresholds.

Thresholds are chosen on *out-of-fold* scores: each train query is scored by a scorer that did
not see it, so the optimizer does not pick thresholds that only work on memorised answers. The
scorer that ships is then refitted on all fitting queries. With ``epsilon`` set, a slice of the
train queries (``calibration_fraction``) is held out from both and used only to certify the
thresholds with Learn-then-Test (:mod:`ponder._risk`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._exceptions import ConfigError, DataError
from .._features import agreement_matrix
from .._risk import ltt_select
from ..scorers import table_signals
from ._cascade import Cascade, Rung, live_spec
from ._optimize import ChainChoice, Frontier, optimize_chains
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
    """Scorer training rows: each (query, model) alone, plus ``earlier_samples`` copies that see
    one other model's answer as an earlier rung (so the scorer learns what agreement means).
    Each row carries its answer's verification signals where the table recorded them."""
    from ..scorers import scorer_frame, signal_columns

    rng = np.random.default_rng(seed)
    Y, P, R = table.scores, table.present, table.responses
    qs, rs, ms, es, gs, ys = [], [], [], [], [], []
    at_q, at_m = [], []
    queries, qids, models = table.queries, table.query_ids, table.models
    for q in range(len(qids)):
        avail = np.flatnonzero(P[q])
        for m in avail:
            others = avail[avail != m]
            variants: list[list[tuple[str, str]]] = [[]]
            if others.size:
                for a in rng.choice(others, size=min(earlier_samples, others.size), replace=False):
                    variants.append([(models[a], str(R[q, a]))])
            for e in variants:
                qs.append(queries[q])
                rs.append(str(R[q, m]))
                ms.append(models[m])
                es.append(e)
                gs.append(qids[q])
                ys.append(float(Y[q, m]))
                at_q.append(q)
                at_m.append(m)
    X = scorer_frame(qs, rs, ms, es, gs).assign(**signal_columns(table, at_q, at_m))
    return X, np.asarray(ys)


def _scorer_params(table: OutcomeTable, params: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(params or {})
    if not any(str(r) for r in table.responses.ravel()[:5000]):
        out.setdefault("response_text", False)  # no responses recorded: judge by query only
    return out


def fit_scorer(table: OutcomeTable, params: dict[str, Any] | None = None, *, seed: int = 0
               ) -> AnswerScorer:
    """One scorer for every model of ``table``."""
    from ..scorers import AnswerScorer

    X, y = training_frame(table, seed=seed)
    try:
        return AnswerScorer(**_scorer_params(table, params)).fit(X, y)
    except ValueError as exc:
        raise DataError(f"cannot train a scorer: {exc}", file=table.name) from None


def crossfit_scores(
    table: OutcomeTable, params: dict[str, Any] | None = None, *, folds: int = 5, seed: int = 0,
    agree: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold ``(s1, s2)`` (see :meth:`AnswerScorer.score_grid`) for every train query."""
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


@dataclass
class Certificate:
    epsilon: float
    delta: float
    method: str
    n_calibration: int
    scale: float | None  # threshold path position chosen (None: nothing certified)
    drop_on_calibration: float | None


def _path_thresholds(base: tuple[float, ...], s: float) -> tuple[float, ...]:
    """s = 0: never accept (always climb to the last rung); s = 1: the optimizer's thresholds."""
    if s <= 0:
        return tuple(2.0 for _ in base)  # above any probability
    return tuple(float(1.0 - s * (1.0 - min(t, 1.0))) for t in base)


def certify(
    cascade: Cascade, calibration: OutcomeTable, *, epsilon: float, delta: float,
    method: str = "wsr", max_scale: float = 2.0, steps: int = 41,
) -> tuple[Cascade, Certificate]:
    """Move the thresholds along a path from 'always escalate' towards and past the optimizer's
    choice, and keep the most aggressive point whose quality drop against always answering with
    the last rung is certified ≤ ε with probability ≥ 1−δ (Learn-then-Test, fixed sequence)."""
    base = tuple(r.threshold for r in cascade.rungs[:-1])
    scales = np.linspace(0.0, max_scale, steps)
    last = calibration.models.index(cascade.rungs[-1].model)
    y_last = np.nan_to_num(calibration.scores[:, last], nan=0.0)
    scores = cascade.rung_scores(calibration) if len(cascade.rungs) > 1 else None
    losses = np.zeros((len(calibration.query_ids), steps))
    variants = []
    for j, s in enumerate(scales):
        th = _path_thresholds(base, float(s))
        rungs = [replace(r, threshold=th[i] if i < len(th) else r.threshold)
                 for i, r in enumerate(cascade.rungs)]
        variant = Cascade(rungs, budget_usd=cascade.budget_usd, name=cascade.name,
                          info=dict(cascade.info))
        _, qual, _ = variant.replay(calibration, scores)
        losses[:, j] = y_last - qual
        variants.append(variant)
    sel = ltt_select(np.clip(losses, -1, 1), epsilon, delta, method=method, signed=True)
    if sel.index is None:
        chosen = variants[0]
        cert = Certificate(epsilon, delta, method, sel.n, None, None)
    else:
        chosen = variants[sel.index]
        cert = Certificate(epsilon, delta, method, sel.n, float(scales[sel.index]),
                           float(sel.risks[sel.index]))
    chosen.info["guarantee"] = {
        "epsilon": epsilon, "delta": delta, "method": method, "n_calibration": cert.n_calibration,
        "certified": cert.scale is not None, "path_scale": cert.scale,
        "drop_on_calibration": cert.drop_on_calibration,
        "reference_model": cascade.rungs[-1].model,
    }
    return chosen, cert


class CascadeOptimizer:
    """Fit scorers with cross-fitting and build the cost–quality frontier of all chains.

    ``fit(train)`` learns ``scorer_`` (refitted on all fitting queries), the out-of-fold
    ``s1_``/``s2_`` and ``frontier_``; ``cascade(budget=…)`` / ``cascade(target=…)`` then picks a
    chain. With ``calibration_fraction`` > 0, that share of the train queries is set aside
    (``calibration_``) for :func:`certify`.
    """

    def __init__(
        self,
        *,
        max_length: int = 3,
        n_thresholds: int = 32,
        folds: int = 5,
        scorer_params: dict[str, Any] | None = None,
        calibration_fraction: float = 0.0,
        models: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.max_length = max_length
        self.n_thresholds = n_thresholds
        self.folds = folds
        self.scorer_params = scorer_params
        self.calibration_fraction = calibration_fraction
        self.models = models
        self.seed = seed

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
            agree = agreement_matrix(fit_table.responses)
            self.s1_, self.s2_ = crossfit_scores(fit_table, self.scorer_params, folds=self.folds,
                                                 seed=self.seed, agree=agree)
            self.scorer_ = fit_scorer(fit_table, self.scorer_params, seed=self.seed)
        self.frontier_: Frontier = optimize_chains(
            self.s1_, self.s2_, fit_table.scores, fit_table.costs,
            max_length=min(self.max_length, len(self.models_)), n_thresholds=self.n_thresholds)
        self.mean_cost_ = np.nanmean(fit_table.costs, axis=0)
        return self

    def choose(self, *, budget: float | None = None, target: float | None = None
               ) -> ChainChoice:
        if not hasattr(self, "frontier_"):
            from .._exceptions import NotFittedError

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
        for k, m in enumerate(choice.chain):
            model = self.models_[m]
            last = k == len(choice.chain) - 1
            samples, logprobs = rung_signal_settings(self.train_, model,
                                                     None if last else self.scorer_)
            rungs.append(Rung(
                model=model, threshold=1.0 if last else float(choice.thresholds[k]),
                scorer=None if last else self.scorer_, spec=live_spec(model, model_map),
                expected_cost_usd=float(self.mean_cost_[m]), samples=samples, logprobs=logprobs,
            ))
        info = {"expected": {"cost_usd": choice.cost, "quality": choice.quality,
                             "on": "train (out-of-fold scores)",
                             "n_queries": len(self.train_.query_ids)}}
        return Cascade(rungs, budget_usd=budget_usd, name=name, info=info)

    def cascade(self, *, budget: float | None = None, target: float | None = None,
                name: str = "cascade", model_map: dict[str, str] | None = None) -> Cascade:
        return self.build(self.choose(budget=budget, target=target), name=name,
                          model_map=model_map)
