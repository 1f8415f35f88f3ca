"""Routers as ``ponder eval`` strategies: fit on the train rows, sweep the knob (from the router's
own test predictions, labels unused, as RouteLLM) on the test rows. ``route-cascade``: a
UtilityRouter picks the rung where the cascade starts, so a hard query skips the cheap rungs; a
chain that starts with an agreement set skips it where a ridge regression predicts no agreement."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator

from ..evaluation._strategy import OperatingPoint, register_strategy
from ..strategies import live_model_map
from ._base import BaseRouter, model_means
from ._io import ROUTER_KINDS, save_router
from ._live import LiveRouter, RouteThenCascade, write_strategy_file
from ._pairwise import VARIANTS
from ._utility import UtilityRouter

if TYPE_CHECKING:
    from ..cascade import Cascade
    from ..evaluation._table import OutcomeTable


def start_rungs(router: Any, queries: list[str], chain_models: list[str], knob: float,
                predicted: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Rung index (into ``chain_models``) where each query starts; ``predicted``: (quality, cost)."""
    idx = router._model_indices(chain_models)
    qhat, chat = predicted or (router.predict_quality(queries), router.predict_cost(queries))
    j: np.ndarray = np.asarray(router.choose(qhat, chat, knob, models=chain_models), dtype=int)
    rung = np.full(qhat.shape[1], -1, dtype=int)  # model column → its rung
    rung[idx] = np.arange(len(idx))
    out: np.ndarray = rung[j]
    return out


def nearest_knob(grid: np.ndarray, spend: np.ndarray, want: float) -> tuple[float, bool]:
    """The knob whose predicted ``spend`` is nearest ``want``, and whether it misses by > 10%: the
    same λ can mean another spend for another fit, so a setting is matched by what it does."""
    i = int(np.argmin(np.abs(spend - want)))
    return float(grid[i]), bool(abs(spend[i] - want) > 0.1 * abs(want) + 1e-12)


def blank_missing(points: list[OperatingPoint], missing: list[bool], n: int
                  ) -> list[OperatingPoint]:
    """``points``, NaN where ``missing``: no counterpart in this fit, so they cannot be calibrated."""
    nan = np.full(n, np.nan)
    return [OperatingPoint(p.setting, nan, nan, p.extra) if gone else p
            for p, gone in zip(points, missing, strict=True)]


def _save_routed(router: BaseRouter, directory: str | Path, *, kind: str, name: str,
                 knob: float | None, model_map: dict[str, str] | None,
                 extra: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    save_router(router, directory / "router")
    return write_strategy_file(directory / "strategy.json", directory / "router", kind=kind,
                               name=name, knob=knob, model_map=model_map, extra=extra)


class RouteCascadeStrategy(BaseEstimator):  # type: ignore[misc]  # scikit-learn is untyped
    """Every (cascade chain on the train frontier) × (router knob) point."""

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
        self.skips_: dict[int, tuple[Any, Any]] = {}  # set index → (TF-IDF, ridge), lazily
        return self

    def _skip(self, j: int, queries: list[str]) -> np.ndarray:
        """Agreement set j's predicted acceptance score per query: ridge regression on TF-IDF,
        fitted on the set's out-of-fold acceptance scores on train (no answer counts as 0)."""
        if j not in self.skips_:
            from sklearn.linear_model import Ridge

            from .._features import TextFeaturizer

            opt = self.cascade_.optimizer_
            train = list(opt.train_.queries)
            y = np.clip(np.nan_to_num(np.asarray(opt.set_s1_[:, j], dtype=float), nan=0.0, neginf=0.0),
                        0, 1)
            text = TextFeaturizer(max_features=5000).fit(train)
            self.skips_[j] = text, Ridge(alpha=1.0).fit(text.transform(train), y)
        text, ridge = self.skips_[j]
        return np.asarray(ridge.predict(text.transform(queries)), dtype=float)

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        """Every chain of the cascade's sweep × router knobs (λ = ∞: the plain cascade)."""
        opt = self.cascade_.optimizer_
        router = self.router_
        items: list[tuple[float, Any, float]] = []
        qhat = chat = np.zeros((0, 0))  # predicted once, when a chain of models needs them
        for b, choice in self.cascade_.choices(unique=True):
            chain = list(choice.chain)
            if chain[0] >= len(opt.models_):  # an agreement set first: skip it where it rarely agrees
                pred = self._skip(chain[0] - len(opt.models_), test.queries)
                grid = np.unique(np.quantile(pred, np.linspace(0.05, 0.5, self.n_knobs)))
                knobs = [*grid, np.inf] if len(chain) > 1 else [np.inf]
            else:
                if not qhat.size:
                    qhat, chat = self._predicted(test.queries)
                cols = router._model_indices(opt.describe(chain))
                knobs = [*router.knob_grid(qhat[:, cols], chat[:, cols], n=self.n_knobs), np.inf]
            items += [(float(b), choice, float(k)) for k in knobs]
        return self._points(test, items)

    def replay(self, test: OutcomeTable, settings: list[dict[str, Any]]) -> list[OperatingPoint]:
        """Another fit's settings on ``test``: this fit's chain for each budget, a routed setting
        at the knob whose predicted start-rung cost (no labels) is nearest the setting's."""
        opt = self.cascade_.optimizer_
        router = self.router_
        qhat, chat = self._predicted(test.queries)
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

    def _predicted(self, queries: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The router's (quality, cost) per query; empty for no queries, which it cannot featurize."""
        if not len(queries):
            empty = np.zeros((0, len(self.router_.models_)))
            return empty, empty
        return self.router_.predict_quality(queries), self.router_.predict_cost(queries)

    def _start_cost(self, names: list[str], start: np.ndarray, chat: np.ndarray) -> float:
        cols = self.router_._model_indices(names)
        return float(np.mean(chat[np.arange(len(start)), cols[start]]))

    def live(self, setting: dict[str, Any], *, name: str | None = None,
             model_map: dict[str, str] | None = None, config: Any = None
             ) -> Cascade | RouteThenCascade:
        """This fit's cascade for the budget, started where the router puts each query."""
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
        """The cascade measured at ``setting`` (with a finite knob, also the router) in ``directory``."""
        directory = Path(directory)
        live = self.live(setting, name=name, model_map=model_map)
        if not isinstance(live, RouteThenCascade):  # λ = ∞: the plain cascade
            return live.save(directory / "strategy.json", model_map=model_map)
        live.cascade.save(directory / "cascade.json", model_map=model_map)
        return _save_routed(self.router_, directory, kind="route-cascade", name=name, knob=live.knob,
                            model_map=model_map, extra={"cascade": "cascade.json"})

    def _points(self, test: OutcomeTable, items: list[tuple[float, Any, float]]
                ) -> list[OperatingPoint]:
        """One point per (budget, chain, knob): where each query starts, then the cascade."""
        from ..cascade import Cascade

        opt = self.cascade_.optimizer_
        test, s1, s2 = opt.score_table(test)
        nq, nm = s1.shape
        router = self.router_
        qhat, chat = self._predicted(test.queries)
        points = []
        for b, choice, knob in items:
            cascade = opt.build(choice, name=self.name)
            chain = list(choice.chain)
            names = opt.describe(chain)
            if np.isinf(knob):
                start = np.zeros(nq, dtype=int)
            elif chain[0] >= nm:
                start = (self._skip(chain[0] - nm, test.queries) < knob).astype(int)
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


class RouterStrategy(BaseEstimator):  # type: ignore[misc]  # scikit-learn is untyped
    """A router as an evaluator Strategy; ``make`` returns an unfitted router."""

    kind = "router"

    def __init__(self, name: str, make: Callable[[], BaseRouter], n_points: int = 60) -> None:
        self.name = name
        self.make = make
        self.n_points = n_points

    def fit(self, train: OutcomeTable) -> RouterStrategy:
        self.router_ = self.make().fit(train)
        return self

    def live(self, setting: dict[str, Any], *, name: str | None = None,
             model_map: dict[str, str] | None = None, config: Any = None) -> LiveRouter:
        """This fitted router at ``setting``'s λ, as its saved file loads."""
        return LiveRouter(self.router_, name=name or self.name, knob=float(setting["knob"]),
                          model_map=live_model_map(self.router_.models_, model_map, config))

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        r = self.router_
        return self._points(test, r.knob_grid(r.predict_quality(test.queries),
                                              r.predict_cost(test.queries), n=self.n_points))

    def replay(self, test: OutcomeTable, settings: list[dict[str, Any]]) -> list[OperatingPoint]:
        """Another fit's settings on ``test``, each at this fit's knob whose predicted spend (no
        labels) is nearest the setting's; one without a predicted spend replays its λ as is."""
        r = self.router_
        qhat, chat = r.predict_quality(test.queries), r.predict_cost(test.queries)
        grid = np.asarray(r.knob_grid(qhat, chat, n=max(4 * self.n_points, 240)), dtype=float)
        rows = np.arange(len(test.queries))
        spend = np.array([float(np.mean(chat[rows, r.choose(qhat, chat, float(k))]))
                          for k in grid]) if len(rows) else np.zeros(len(grid))
        matched = [(float(s["knob"]), False) if s.get("predicted_cost_usd") is None or not len(grid)
                   else nearest_knob(grid, spend, float(s["predicted_cost_usd"])) for s in settings]
        return blank_missing(self._points(test, [k for k, _ in matched]), [m for _, m in matched],
                             len(rows))

    def _points(self, test: OutcomeTable, knobs: Any) -> list[OperatingPoint]:
        r = self.router_
        rows, chat = np.arange(len(test.queries)), r.predict_cost(test.queries)
        # the exact λ measured: a shipped file must make the very decisions replayed here
        return [OperatingPoint({"knob": float(knob), "router": r.kind, "predicted_cost_usd":
                                float(np.mean(chat[rows, choice])) if len(rows) else None},
                               cost, quality, {"strong_share": float(np.mean(choice == r.strong_))})
                for knob, cost, quality, choice in r.replay(test, knobs)]

    def save(self, setting: dict[str, Any], directory: str | Path, *, name: str,
             model_map: dict[str, str] | None = None) -> Path:
        return _save_routed(self.router_, directory, kind="router", name=name,
                            knob=float(setting["knob"]), model_map=model_map)


@register_strategy("route-cascade")
def _route_cascade(train: OutcomeTable) -> RouteCascadeStrategy | None:
    if len(train.models) < 2:
        return None
    try:
        import ponder.cascade  # noqa: F401
    except ImportError:
        return None
    return RouteCascadeStrategy()


def _factory(name: str, make: Callable[[], BaseRouter], pairwise: bool = False) -> None:
    @register_strategy(name)
    def factory(train: OutcomeTable) -> RouterStrategy | None:
        # a pairwise router needs a best model that is not the cheapest
        if len(train.models) < 2 or (pairwise and np.nanargmax(model_means(train)) == 0):
            return None
        return RouterStrategy(name, make)


# Every kind of ROUTER_KINDS is a strategy, router-KIND; the pairwise one once per label variant.
_SHORT = {"deterministic": "det", "probabilistic": "prob", "transformed": "trans"}
for _kind, _cls in ROUTER_KINDS.items():
    if _kind == "pairwise":
        for _v in VARIANTS:
            _factory(f"router-pairwise-{_SHORT[_v]}", partial(_cls, variant=_v), pairwise=True)
    else:
        _factory(f"router-{_kind}", _cls)
