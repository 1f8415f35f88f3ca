"""What every router shares: fitting on an outcome table, one knob, routing, calibration.
:meth:`BaseRouter.knob_grid` runs from the most expensive setting to the cheapest whatever the
knob's direction: the order calibration (and Learn-then-Test's fixed sequence) walks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator

from .._exceptions import ConfigError, DataError, NotFittedError, UnknownModel
from ._features import FastTransform, make_featurizer

if TYPE_CHECKING:
    from ..evaluation._table import OutcomeTable

FORMAT = "ponder-router"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RouteDecision:
    """The choice for one query, with each candidate's predicted quality (pairwise: P(weak good
    enough) and its complement) and USD cost."""

    model: str
    quality: dict[str, float]
    cost: dict[str, float]
    knob: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Calibration:
    """How the knob was set: the target, what it reached on the calibration rows, the guarantee."""

    target: str  # "strong_share" | "budget" | "quality_floor"
    value: float
    knob: float
    reached_cost: float
    reached_quality: float
    reached_strong_share: float
    n: int
    delta: float | None = None
    guaranteed: bool | None = None  # quality floor only: was H0 (risk > epsilon) rejected at the knob

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_is_fitted(router: Any) -> None:
    if not router.__sklearn_is_fitted__():
        raise NotFittedError(
            f"this {type(router).__name__} is not fitted yet; call fit(outcome_table) first"
        )


def check_in_table(names: list[str], table: OutcomeTable, what: str = "model(s)") -> None:
    missing = [m for m in names if m not in table.models]
    if missing:
        raise UnknownModel(f"{what} {', '.join(map(repr, missing))} not in outcome table "
                           f"{table.name!r}; it has: {', '.join(table.models)}")


def table_arrays(table: OutcomeTable, models: list[str],
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, costs, present) of ``table`` in the column order of ``models``."""
    check_in_table(models, table, "the router's model(s)")
    cols = [table.models.index(m) for m in models]
    return table.scores[:, cols], table.costs[:, cols], table.present[:, cols]


def model_means(table: OutcomeTable) -> np.ndarray:
    return np.asarray(np.nanmean(np.where(table.present, table.scores, np.nan), axis=0))


class BaseRouter(BaseEstimator):  # type: ignore[misc]  # scikit-learn is untyped
    """Features, cost model, routing, calibration and saving, once; subclasses fit and predict."""

    kind: str = "base"
    featurizer: Any = "tfidf"  # every subclass takes it as an __init__ parameter
    _default_knob: float = 0.0
    #: False for a two-model threshold router, whose larger knob sends more queries to the strong one
    _knob_cheaper_when_larger: bool = True

    # BaseEstimator reads the parameters off each subclass's __init__, which only stores them.
    def __sklearn_is_fitted__(self) -> bool:
        return bool(getattr(self, "models_", None))

    def _select_models(self, table: OutcomeTable) -> list[str]:
        models = getattr(self, "models", None)
        if models:
            check_in_table(models, table)
            return [m for m in table.models if m in set(models)]  # keep cheapest-first order
        return list(table.models)

    def fit(self, table: OutcomeTable, y: Any = None) -> BaseRouter:
        """Learn from an outcome table's rows (train rows only: evaluate on others)."""
        from ..evaluation._table import OutcomeTable

        if not isinstance(table, OutcomeTable):
            raise DataError(f"{type(self).__name__}.fit expects an OutcomeTable (ponder.evaluation."
                            f"read_outcomes), got {type(table).__name__}")
        self.__dict__.pop("_pred_cache", None)  # predictions of the previous fit
        models = self._select_models(table)
        if len(models) < 2:
            raise DataError(f"a router needs at least two models; table {table.name!r} has "
                            f"{len(models)}", file=table.name)
        scores, costs, present = table_arrays(table, models)
        queries = table.queries
        self.featurizer_ = make_featurizer(self.featurizer).fit(queries)
        X = self.featurizer_.transform(queries)
        self._fit_cost_model(queries, costs, present)
        self.train_quality_ = np.array([np.nanmean(scores[:, j]) if present[:, j].any() else 0.0
                                        for j in range(len(models))])
        self.models_ = models
        self.strong_ = int(np.argmax(self.train_quality_))
        self._fit_core(X, scores, present)
        knob = getattr(self, "knob", None)
        self.knob_ = float(self._default_knob if knob is None else knob)
        self.calibration_: Calibration | None = None
        self.n_train_ = len(queries)
        return self

    def _fit_cost_model(self, queries: list[str], costs: np.ndarray, present: np.ndarray) -> None:
        """Per-model cost ≈ a + b·(kchars of the query), by least squares, never negative: a mean
        would misprice long few-shot prompts. ``cost_model="mean"``: the train mean, so the λ rule
        ranks queries by predicted quality gain alone, as a pairwise router does (APGR/CPT)."""
        n_chars = np.array([len(q) for q in queries], dtype=float) / 1000.0
        M = costs.shape[1]
        a, b = np.zeros(M), np.zeros(M)
        mode = getattr(self, "cost_model", "length")
        if mode not in ("length", "mean"):
            raise ConfigError(f"cost_model must be 'length' or 'mean', got {mode!r}")
        for j in range(M):
            ok = present[:, j]
            if not ok.any():
                continue
            x, c = n_chars[ok], costs[ok, j]
            if mode == "length" and ok.sum() >= 3 and np.ptp(x) > 0:
                A = np.stack([np.ones_like(x), x], axis=1)
                coef, *_ = np.linalg.lstsq(A, c, rcond=None)
                a[j], b[j] = coef
                if b[j] < 0 or a[j] < 0:  # fall back to the mean rather than extrapolate below 0
                    a[j], b[j] = float(np.mean(c)), 0.0
            else:
                a[j] = float(np.mean(c))
        self.cost_intercept_, self.cost_slope_ = a, b

    def _model_indices(self, models: list[str] | None) -> np.ndarray:
        check_is_fitted(self)
        if models is None:
            return np.arange(len(self.models_))
        self.check_known(models, "models")
        return np.array([self.models_.index(m) for m in models], dtype=int)

    def check_known(self, names: Iterable[str], what: str) -> None:
        unknown = [m for m in names if m not in self.models_]
        if unknown:
            raise UnknownModel(
                f"{what}: this {self.kind} router never saw {', '.join(map(repr, unknown))}; it "
                f"was trained on {', '.join(self.models_)} (retrain it on outcomes that include "
                "them)")

    def transform(self, queries: list[str]) -> Any:
        """Query features (TF-IDF goes through a cached fast path: same numbers, ~0.3 ms)."""
        check_is_fitted(self)
        fast = self.__dict__.get("_fast_transform")
        if fast is None or fast.featurizer is not self.featurizer_:
            fast = self._fast_transform = FastTransform(self.featurizer_)
        return fast.transform(list(queries))

    def predict_quality(self, queries: list[str] | str, models: list[str] | None = None) -> np.ndarray:
        """(n, M) predicted quality (columns: ``self.models_`` or ``models``), kept for the last
        queries, featurizer and parameters: a sweep asks once per knob, features are a Python loop."""
        queries = [queries] if isinstance(queries, str) else queries
        idx = self._model_indices(models)
        key = (tuple(queries), id(self.featurizer_), repr(sorted(self.get_params().items())))
        return self._remember("_pred_cache", key,
                              lambda: self._predict_core(self.transform(queries)))[:, idx]

    def _remember(self, name: str, key: Any, compute: Callable[[], Any]) -> np.ndarray:
        """``compute()`` kept read-only (callers share it) in ``self.<name>`` for the last key."""
        hit = self.__dict__.get(name)
        if hit is not None and hit[0] == key:
            cached: np.ndarray = hit[1]
            return cached
        out = np.asarray(compute())
        out.flags.writeable = False
        self.__dict__[name] = (key, out)
        return out

    def predict_cost(self, queries: list[str] | str, models: list[str] | None = None) -> np.ndarray:
        key = (queries,) if isinstance(queries, str) else tuple(queries)
        idx = self._model_indices(models)
        n_chars = self._remember("_kchars_cache", key,
                                 lambda: np.array([len(q) for q in key], dtype=float) / 1000.0)[:, None]
        cost: np.ndarray = (self.cost_intercept_[None, :] + self.cost_slope_[None, :] * n_chars)[:, idx]
        return cost

    def choose(self, qhat: np.ndarray, chat: np.ndarray, knob: float | None = None,
               allowed: np.ndarray | None = None, models: list[str] | None = None) -> np.ndarray:
        """Model index per query; ``allowed`` (n, M) bool and ``models`` restrict the choice."""
        ok = np.ones(qhat.shape, dtype=bool) if allowed is None else allowed
        if models is not None:
            ok = ok & np.isin(np.arange(qhat.shape[1]), self._model_indices(models))
        return self._decide(qhat, chat, self.knob_ if knob is None else float(knob), ok)

    def route(self, query: str, *, knob: float | None = None,
              models: list[str] | None = None) -> RouteDecision:
        """Pick a model for one query. ``models`` restricts the candidates (all must be known)."""
        idx = self._model_indices(models)
        qhat = self._predict_core(self.transform([query]))
        chat = self.predict_cost([query])
        k = self.knob_ if knob is None else float(knob)
        j = int(self.choose(qhat, chat, k, models=models)[0])
        return RouteDecision(
            model=self.models_[j],
            quality={self.models_[i]: float(qhat[0, i]) for i in idx},
            cost={self.models_[i]: float(chat[0, i]) for i in idx},
            knob=k,
        )

    def route_many(self, queries: list[str], *, knob: float | None = None) -> list[str]:
        qhat = self.predict_quality(queries)
        chat = self.predict_cost(queries)
        return [self.models_[j] for j in self.choose(qhat, chat, knob)]

    def knob_grid(self, qhat: np.ndarray, chat: np.ndarray, n: int = 60) -> np.ndarray:
        grid = np.unique(self._knob_grid(qhat, chat))
        if grid.size > n:
            grid = np.unique(np.quantile(grid, np.linspace(0, 1, n), method="nearest"))
        return grid[::-1] if self._knob_cheaper_when_larger is False else grid

    def replay(self, table: OutcomeTable, knobs: list[float] | np.ndarray | None = None,
               ) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
        """(knob, realised cost, realised quality, chosen index) per knob, among recorded models."""
        scores, costs, present = table_arrays(table, self.models_)
        qhat = self.predict_quality(table.queries)
        chat = self.predict_cost(table.queries)
        if knobs is None:
            knobs = self.knob_grid(qhat, chat)
        rows = np.arange(len(qhat))
        out = []
        for k in knobs:
            j = self.choose(qhat, chat, float(k), allowed=present)
            out.append((float(k), costs[rows, j], scores[rows, j], j))
        return out

    def calibrate(
        self,
        table: OutcomeTable,
        *,
        strong_share: float | None = None,
        budget: float | None = None,
        quality_floor: float | None = None,
        delta: float = 0.1,
    ) -> BaseRouter:
        """Set the knob on held-out rows for a share of queries to the strongest model, a mean
        USD budget (best quality within it), or a quality floor that holds with probability
        ≥ 1 − δ (Learn-then-Test, fixed-sequence from the most expensive knob; needs rows
        exchangeable with future queries and unused in training)."""
        targets = {"strong_share": strong_share, "budget": budget, "quality_floor": quality_floor}
        given = {k: v for k, v in targets.items() if v is not None}
        if len(given) != 1:
            raise ConfigError("calibrate needs exactly one of strong_share, budget, quality_floor")
        (target, value), = given.items()
        value = float(value)
        if target in ("strong_share", "quality_floor") and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{target} must be in [0, 1], got {value}")
        if target == "budget" and value < 0:
            raise ConfigError(f"budget must be >= 0 USD per query, got {value}")
        results = self.replay(table)
        knobs, mean_cost, mean_q, share = np.array(
            [(k, np.mean(c), np.mean(q), np.mean(j == self.strong_)) for k, c, q, j in results]).T
        guaranteed = None
        if target == "strong_share":
            i = int(np.argmin(np.abs(share - value) + 1e-9 * np.arange(len(share))))
        elif target == "budget":
            ok = np.flatnonzero(mean_cost <= value + 1e-15)
            i = int(ok[np.argmax(mean_q[ok])]) if ok.size else int(np.argmin(mean_cost))
        else:
            from .._risk import ltt_select

            if not 0.0 < delta < 1.0:
                raise ConfigError(f"delta must be in (0, 1), got {delta}")
            if value <= 0.0:
                raise ConfigError("quality_floor must be > 0 (a floor of 0 needs no calibration)")
            # columns in knob_grid order, safest (most expensive) first; loss = 1 − quality
            losses = np.stack([1.0 - r[2] for r in results], axis=1)
            sel = ltt_select(losses, epsilon=1.0 - value, delta=delta, method="hb")
            guaranteed = sel.certified
            i = 0 if sel.index is None else int(sel.index)
        self.knob_ = float(knobs[i])
        self.calibration_ = Calibration(
            target=target, value=value, knob=self.knob_, reached_cost=float(mean_cost[i]),
            reached_quality=float(mean_q[i]), reached_strong_share=float(share[i]),
            n=len(table.query_ids), delta=delta if target == "quality_floor" else None,
            guaranteed=guaranteed,
        )
        return self

    def _fit_core(self, X: Any, scores: np.ndarray, present: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_core(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def _weak_score(self, qhat: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _decide(self, qhat: np.ndarray, chat: np.ndarray, knob: float,
                allowed: np.ndarray) -> np.ndarray:
        """argmax(quality − λ·cost) over allowed models (ties: the cheaper, columns are
        cheapest-first); a two-model threshold router: strong where ``_weak_score`` < knob."""
        if self._knob_cheaper_when_larger:
            best: np.ndarray = np.argmax(np.where(allowed, qhat - knob * chat, -np.inf), axis=1)
            return best
        choice = (self._weak_score(qhat) < knob).astype(int)  # 1 = strong
        choice[allowed[:, 0] & ~allowed[:, 1]] = 0
        choice[allowed[:, 1] & ~allowed[:, 0]] = 1
        return choice

    def _knob_grid(self, qhat: np.ndarray, chat: np.ndarray) -> np.ndarray:
        """λ breakpoints where some query's choice changes between two models."""
        dq = qhat[:, :, None] - qhat[:, None, :]
        dc = chat[:, :, None] - chat[:, None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = dq / dc
        lam = lam[(dc > 0) & (dq > 0) & np.isfinite(lam)]
        return np.concatenate([[0.0], lam * (1 + 1e-9), [np.max(lam, initial=0.0) * 2 + 1.0]])

    #: the fitted arrays a router file keeps, each in attribute name + "_"
    _state: tuple[str, ...] = ()

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k + "_") for k in self._state}

    def _set_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for k in self._state:
            setattr(self, k + "_", arrays[k])
