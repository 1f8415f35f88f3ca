"""Route then cascade, evaluated as its own strategy: the router picks the rung where the cascade
starts; the cascade climbs from there as usual, so a hard query skips the cheap rungs' cost and
latency. The cascade is fitted by its own optimizer; a :class:`~ponder.routers.UtilityRouter`
picks among the chain's models by argmax(predicted quality − λ·cost). Starting at rung s scores
it with no earlier answer in view, as the live cascade does when the lower rungs are skipped.

A chain that starts with an agreement set is routed by :class:`AgreementSkip` instead: a query
it predicts the set's cheap models will rarely agree on goes straight to the next rung.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator

from ..evaluation._strategy import OperatingPoint, register_strategy
from ._utility import UtilityRouter

if TYPE_CHECKING:
    from ..cascade import Cascade
    from ..evaluation._table import OutcomeTable
    from ._live import RouteThenCascade


def start_rungs(router: Any, queries: list[str], chain_models: list[str], knob: float,
                predicted: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Rung index (into ``chain_models``) where each query starts. ``predicted``: the router's
    (quality, cost) predictions for ``queries``, when the caller has them already."""
    idx = router._model_indices(chain_models)
    qhat, chat = predicted or (router.predict_quality(queries), router.predict_cost(queries))
    allowed = np.zeros(qhat.shape, dtype=bool)
    allowed[:, idx] = True
    j: np.ndarray = np.asarray(router.choose(qhat, chat, knob, allowed=allowed), dtype=int)
    rung = np.full(qhat.shape[1], -1, dtype=int)  # model column → its rung
    rung[idx] = np.arange(len(idx))
    out: np.ndarray = rung[j]
    return out


def nearest_knob(grid: np.ndarray, spend: np.ndarray, want: float) -> tuple[float, bool]:
    """The knob of ``grid`` whose predicted ``spend`` is nearest ``want``, and whether even it
    misses ``want`` by more than 10% (the setting then has no counterpart in this fit)."""
    i = int(np.argmin(np.abs(spend - want)))
    return float(grid[i]), bool(abs(spend[i] - want) > 0.1 * abs(want) + 1e-12)


def blank_missing(points: list[OperatingPoint], missing: list[bool], n: int
                  ) -> list[OperatingPoint]:
    """``points``, NaN (over ``n`` queries) where ``missing``: they cannot be calibrated."""
    nan = np.full(n, np.nan)
    return [OperatingPoint(p.setting, nan, nan, p.extra) if gone else p
            for p, gone in zip(points, missing, strict=True)]


class AgreementSkip:
    """Query → predicted acceptance score of one agreement set: ridge regression on TF-IDF,
    fitted on the set's out-of-fold acceptance scores on train (no answer counts as 0)."""

    def __init__(self, alpha: float = 1.0, max_features: int = 5000) -> None:
        self.alpha = alpha
        self.max_features = max_features

    def fit(self, queries: list[str], scores: np.ndarray) -> AgreementSkip:
        from sklearn.linear_model import Ridge

        from .._features import TextFeaturizer

        y = np.clip(np.nan_to_num(np.asarray(scores, dtype=float), nan=0.0, neginf=0.0), 0, 1)
        self.text_ = TextFeaturizer(max_features=self.max_features).fit(queries)
        self.model_ = Ridge(alpha=self.alpha).fit(self.text_.transform(queries), y)
        return self

    def predict(self, queries: list[str]) -> np.ndarray:
        return np.asarray(self.model_.predict(self.text_.transform(queries)), dtype=float)


class RouteCascadeStrategy(BaseEstimator):  # type: ignore[misc]  # scikit-learn is untyped
    """Offline strategy: every (cascade chain on the train frontier) × (router knob) point.

    A scikit-learn estimator: ``__init__`` stores its parameters, ``fit`` learns ``cascade_``
    (a fitted :class:`~ponder.cascade.CascadeStrategy`), ``router_`` and ``skips_``."""

    kind = "route-cascade"

    def __init__(self, name: str = "route-cascade", *, n_budgets: int = 10, n_knobs: int = 6,
                 seed: int = 0, set_pool: int = 0, n_pareto: int = 0, folds: int = 3,
                 scorer_params: dict[str, Any] | None = None) -> None:
        self.name = name
        self.n_budgets = n_budgets
        self.n_knobs = n_knobs
        self.seed = seed
        self.set_pool = set_pool
        self.n_pareto = n_pareto
        self.folds = folds
        self.scorer_params = scorer_params

    def fit(self, train: OutcomeTable) -> RouteCascadeStrategy:
        from ..cascade import CascadeStrategy

        self.cascade_ = CascadeStrategy(n_budgets=self.n_budgets, seed=self.seed,
                                        set_pool=self.set_pool, n_pareto=self.n_pareto,
                                        folds=self.folds, scorer_params=self.scorer_params
                                        ).fit(train)
        self.router_ = UtilityRouter(models=self.cascade_.optimizer_.models_).fit(train)
        self.skips_: dict[int, AgreementSkip] = {}  # set index → its skip predictor (lazy)
        return self

    def _skip(self, j: int) -> AgreementSkip:
        if j not in self.skips_:
            opt = self.cascade_.optimizer_
            self.skips_[j] = AgreementSkip().fit(list(opt.train_.queries), opt.set_s1_[:, j])
        return self.skips_[j]

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        """Every chain of the cascade's sweep × a grid of router knobs (λ = ∞: the plain
        cascade); each setting names its cascade budget, so another fit can replay it."""
        opt = self.cascade_.optimizer_
        router = self.router_
        items: list[tuple[float, Any, float]] = []
        qhat = chat = np.zeros((0, 0))  # predicted once, when a chain of models needs them
        for b, choice in self.cascade_.choices(unique=True):
            chain = list(choice.chain)
            if chain[0] >= len(opt.models_):  # an agreement set first: skip it where it rarely agrees
                pred = self._skip(chain[0] - len(opt.models_)).predict(test.queries)
                grid = np.unique(np.quantile(pred, np.linspace(0.05, 0.5, self.n_knobs)))
                knobs = [*grid, np.inf] if len(chain) > 1 else [np.inf]
            else:
                if not qhat.size:
                    qhat, chat = router.predict_quality(test.queries), router.predict_cost(test.queries)
                cols = router._model_indices(opt.describe(chain))
                knobs = [*router.knob_grid(qhat[:, cols], chat[:, cols], n=self.n_knobs), np.inf]
            items += [(float(b), choice, float(k)) for k in knobs]
        return self._points(test, items)

    def replay(self, test: OutcomeTable, settings: list[dict[str, Any]]) -> list[OperatingPoint]:
        """Settings taken from another fit of this strategy, on ``test``: the chain this fit's
        cascade picks for the setting's budget, each query started where this fit's router puts
        it. The same λ can mean another start for another fit, so a routed setting is matched
        by what it does: the knob whose *predicted* cost of the start rungs on these queries (no
        labels) is nearest the setting's; where no knob comes within 10%, the setting has no
        counterpart in this fit and its point is NaN (it cannot be calibrated)."""
        opt = self.cascade_.optimizer_
        router = self.router_
        chat = router.predict_cost(test.queries) if len(test.query_ids) else np.zeros((0, 0))
        qhat = router.predict_quality(test.queries) if len(test.query_ids) else chat
        items, missing = [], []
        spends: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}  # chain → (knobs, spend)
        for s in settings:
            b = float(s["budget_usd"])
            choice = self.cascade_._chain_for(b)
            knob = np.inf if s.get("knob") is None else float(s["knob"])
            want = s.get("predicted_start_cost_usd")
            gone = False
            if np.isfinite(knob) and want is not None and choice.chain[0] < len(opt.models_) \
                    and len(test.query_ids):
                names = opt.describe(list(choice.chain))
                if tuple(names) not in spends:  # settings of one chain share its knob grid
                    cols = router._model_indices(names)
                    grid = np.asarray(router.knob_grid(qhat[:, cols], chat[:, cols],
                                                       n=4 * max(self.n_knobs, 10)), dtype=float)
                    starts = [start_rungs(router, test.queries, names, float(k), (qhat, chat))
                              for k in grid]
                    spends[tuple(names)] = grid, np.array([self._start_cost(names, st, chat)
                                                           for st in starts])
                knob, gone = nearest_knob(*spends[tuple(names)], float(want))
            items.append((b, choice, knob))
            missing.append(gone)
        return blank_missing(self._points(test, items), missing, len(test.query_ids))

    def _start_cost(self, names: list[str], start: np.ndarray, chat: np.ndarray) -> float:
        """Mean predicted cost (``chat``: the router's cost model) of the rung each query starts."""
        cols = self.router_._model_indices(names)
        return float(np.mean(chat[np.arange(len(start)), cols[start]]))

    def live(self, setting: dict[str, Any], *, name: str | None = None,
             model_map: dict[str, str] | None = None, config: Any = None
             ) -> Cascade | RouteThenCascade:
        """The live strategy measured at ``setting``, as the file :meth:`save` writes for it
        loads: the cascade this fit picks for its budget, started where this fitted router puts
        each query at its knob (no knob, λ = ∞: the plain cascade). ``config``: its ``[models]``
        aliases name live specs for the models ``model_map`` leaves out."""
        from ._live import RouteThenCascade

        name = name or self.name
        knob = setting.get("knob")
        chain = self.cascade_._chain_for(float(setting["budget_usd"])).chain
        if knob is not None and chain[0] >= len(self.cascade_.optimizer_.models_):
            raise NotImplementedError("a route-cascade that skips an agreement set has no live "
                                      "strategy yet")
        cascade = self.cascade_.live(setting, name=name, model_map=model_map, config=config)
        if knob is None:  # λ = ∞: every query starts at the bottom, i.e. the plain cascade
            return cascade
        return RouteThenCascade(self.router_, cascade, name=name, knob=float(knob))

    def save(self, setting: dict[str, Any], directory: str | Path, *, name: str,
             model_map: dict[str, str] | None = None) -> Path:
        """Write what was measured at ``setting`` into ``directory``: the cascade (and, with a
        finite knob, this fitted router and a route-cascade file pinning the knob); returns the
        strategy file to load."""
        from ._io import save_router
        from ._live import RouteThenCascade, write_strategy_file

        directory = Path(directory)
        live = self.live(setting, name=name, model_map=model_map)
        if not isinstance(live, RouteThenCascade):  # λ = ∞: the plain cascade
            return live.save(directory / "strategy.json", model_map=model_map)
        live.cascade.save(directory / "cascade.json", model_map=model_map)
        save_router(self.router_, directory / "router")
        return write_strategy_file(directory / "strategy.json", directory / "router",
                                   kind="route-cascade", name=name, knob=live.knob,
                                   model_map=model_map, extra={"cascade": "cascade.json"})

    def _points(self, test: OutcomeTable, items: list[tuple[float, Any, float]]
                ) -> list[OperatingPoint]:
        """One point per (budget, chain, knob): where each query starts, then the cascade."""
        from ..cascade import Cascade

        opt = self.cascade_.optimizer_
        test, s1, s2 = opt.score_table(test)
        nq, nm = s1.shape
        router = self.router_
        chat = router.predict_cost(test.queries) if nq else np.zeros((0, nm))
        qhat = router.predict_quality(test.queries) if nq else chat
        points = []
        for b, choice, knob in items:
            cascade = opt.build(choice, name=self.name)
            chain = list(choice.chain)
            names = opt.describe(chain)
            if np.isinf(knob):
                start = np.zeros(nq, dtype=int)
            elif chain[0] >= nm:
                start = (self._skip(chain[0] - nm).predict(test.queries) < knob).astype(int)
            else:
                start = start_rungs(router, test.queries, names, float(knob), (qhat, chat))
            cost, qual = np.zeros(nq), np.zeros(nq)
            for s in np.unique(start):
                rows = np.flatnonzero(start == s)
                sub = Cascade(cascade.rungs[s:], budget_usd=cascade.budget_usd, name=self.name)
                sc, members = opt.replay_scores(chain[s:], s1[rows], s2[rows])
                c, q, _ = sub.replay_rows(test, rows, sc, members)
                cost[rows], qual[rows] = c, q
            routed = np.isfinite(knob) and chain[0] < nm and nq > 0
            start_cost = self._start_cost(names, start, chat) if routed else None
            points.append(OperatingPoint(
                setting={"chain": names, "thresholds": [round(t, 4) for t in choice.thresholds],
                         "knob": None if np.isinf(knob) else float(knob), "budget_usd": b,
                         "predicted_start_cost_usd": start_cost},
                cost=cost, quality=qual,
                extra={"start_share": [float(np.mean(start == s)) for s in range(len(chain))]}))
        return points


@register_strategy("route-cascade")
def _factory(train: OutcomeTable) -> RouteCascadeStrategy | None:
    if len(train.models) < 2:
        return None
    try:
        import ponder.cascade  # noqa: F401
    except ImportError:
        return None
    return RouteCascadeStrategy()
