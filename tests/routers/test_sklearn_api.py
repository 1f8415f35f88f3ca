"""Routers and the answer scorer are scikit-learn estimators: ``get_params``/``set_params``/``clone``
behave as scikit-learn users expect, and ponder's NotFittedError is scikit-learn's too.

``check_estimator`` is not used: it assumes ``fit(X, y)`` on arrays, and a router fits on an
outcome table."""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path

import numpy as np
import pytest
import sklearn.exceptions
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

import ponder
from ponder.routers import (
    BaseRouter,
    KNNRouter,
    MFRouter,
    OracleRouter,
    PairwiseRouter,
    RandomRouter,
    UtilityRouter,
    load_router,
    save_router,
)
from ponder.scorers import AnswerScorer

CASCADE_OUTCOMES = Path(__file__).parents[1] / "fixtures" / "cascade" / "outcomes.csv"

# Every router with a non-default value for some parameter, so that clone must carry it over.
ROUTERS = [
    UtilityRouter(C=0.5, knob=1.0),
    KNNRouter(n_neighbors=7, models=["small", "large"]),
    MFRouter(dim=4, max_iter=50),
    PairwiseRouter(variant="probabilistic", knob=0.4),
    RandomRouter(random_state=3),
    OracleRouter(),
]
IDS = [type(r).__name__ for r in ROUTERS]


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def _init_args(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def _cascade_frame():
    from ponder.cascade import training_frame
    from ponder.evaluation import read_outcomes

    train, test = read_outcomes(CASCADE_OUTCOMES).split()
    return training_frame(train), training_frame(test)


@pytest.fixture(scope="module")
def scorer_data():
    return _cascade_frame()


def test_every_router_class_is_covered():
    concrete = {c for c in _all_subclasses(BaseRouter) if c.__module__.startswith("ponder.")}
    assert concrete <= {type(r) for r in ROUTERS}, concrete - {type(r) for r in ROUTERS}


@pytest.mark.parametrize("est", [*ROUTERS, AnswerScorer(C=0.5, cv=2)], ids=[*IDS, "AnswerScorer"])
def test_parameter_protocol(est):
    assert isinstance(est, BaseEstimator)
    params = est.get_params()
    assert sorted(params) == sorted(_init_args(type(est)))
    assert params == est.get_params(deep=False)
    for name, value in params.items():  # __init__ stores each parameter under its own name
        assert getattr(est, name) is value

    c = clone(est)
    assert type(c) is type(est) and c is not est
    assert c.get_params() == params

    with pytest.raises(ValueError, match="bogus"):
        clone(est).set_params(bogus=1)
    name = next(iter(params))
    c2 = clone(est)
    assert c2.set_params(**{name: params[name]}) is c2
    assert type(est).__name__ in repr(est)


@pytest.mark.parametrize("est", ROUTERS, ids=IDS)
def test_fitted_router_clone_is_unfitted_and_refits_identically(est, split):
    train, test = split
    fitted = clone(est).fit(train)
    check_is_fitted(fitted)
    queries = train.queries if isinstance(est, OracleRouter) else test.queries

    again = clone(fitted)
    assert again.get_params() == fitted.get_params()
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(again))
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(again)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        again.predict_quality(queries)

    again.fit(train)
    np.testing.assert_allclose(again.predict_quality(queries), fitted.predict_quality(queries))
    np.testing.assert_allclose(again.predict_cost(queries), fitted.predict_cost(queries))
    if not isinstance(est, RandomRouter):  # a coin per query: compared below on fresh fits
        assert again.route_many(queries) == fitted.route_many(queries)


def test_random_router_refit_replays_the_same_coins(split):
    train, test = split
    a, b = RandomRouter(random_state=5).fit(train), clone(RandomRouter(random_state=5)).fit(train)
    assert a.route_many(test.queries) == b.route_many(test.queries)


def test_scorer_clone_refits_identically(scorer_data):
    (X, y), (X_test, _) = scorer_data
    fitted = AnswerScorer(C=0.5, cv=2).fit(X, y)
    check_is_fitted(fitted)
    again = clone(fitted)
    assert again.get_params() == fitted.get_params() and not hasattr(again, "models_")
    with pytest.raises(sklearn.exceptions.NotFittedError):
        again.predict_proba(X_test)
    again.fit(X, y)
    np.testing.assert_allclose(again.predict_proba(X_test), fitted.predict_proba(X_test))


def test_set_params_changes_what_fit_learns(split):
    train, test = split
    r = UtilityRouter()
    assert r.set_params(C=0.01, recalibrate=None) is r
    assert (r.C, r.recalibrate) == (0.01, None)
    weak = r.fit(train).predict_quality(test.queries)
    strong = UtilityRouter(C=10.0, recalibrate=None).fit(train).predict_quality(test.queries)
    assert np.ptp(weak) < np.ptp(strong)  # more regularisation, flatter predictions


@pytest.mark.parametrize("est", [UtilityRouter(), AnswerScorer()], ids=["router", "scorer"])
def test_sklearn_except_clause_catches_predict_before_fit(est):
    X = ["What is 2 + 2?"] if isinstance(est, BaseRouter) else _cascade_frame()[1][0]
    predict = est.predict_quality if isinstance(est, BaseRouter) else est.predict_proba
    try:
        predict(X)
    except sklearn.exceptions.NotFittedError as exc:
        assert isinstance(exc, ponder.NotFittedError)
        assert isinstance(exc, ponder.PonderError | ValueError | AttributeError)
        assert "fit" in str(exc)
    else:  # pragma: no cover
        pytest.fail("predict before fit did not raise")


def test_not_fitted_error_class():
    err = ponder.NotFittedError("not fitted")
    assert issubclass(ponder.NotFittedError, sklearn.exceptions.NotFittedError)
    assert issubclass(ponder.NotFittedError, ponder.PonderError)
    assert ponder.NotFittedError.__module__ == "ponder._exceptions"
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ponder.NotFittedError and str(back) == "not fitted"


def test_saved_router_params_are_get_params(split, tmp_path):
    train, _ = split
    r = KNNRouter(n_neighbors=7, shrinkage=2.0).fit(train)
    loaded = load_router(save_router(r, tmp_path / "r"))
    assert loaded.get_params() == r.get_params()
    assert clone(loaded).get_params() == r.get_params()


def test_saved_scorer_params_are_get_params(scorer_data, tmp_path):
    (X, y), (X_test, _) = scorer_data
    s = AnswerScorer(C=0.5, cv=2, max_features=500).fit(X, y)
    loaded = AnswerScorer.load(s.save(tmp_path / "s"))
    assert loaded.get_params() == s.get_params()
    np.testing.assert_allclose(loaded.predict_proba(X_test), s.predict_proba(X_test))


def test_router_with_a_featurizer_object_clones_with_its_own_copy(split):
    from ponder._features import TextFeaturizer

    given = TextFeaturizer(min_df=1, ngram_range=(1, 1))
    router = KNNRouter(featurizer=given, n_components=None)
    copy = clone(router)
    assert copy.featurizer is not given
    assert copy.featurizer.get_params() == given.get_params() == clone(given).get_params()
    a = router.fit(split[0])
    b = KNNRouter(featurizer=given, n_neighbors=3, n_components=None).fit(split[0])
    # each router fitted its own copy: the object given stays unfitted and is shared by none
    assert a.featurizer_ is not given and b.featurizer_ is not given
    assert a.featurizer_ is not b.featurizer_ and not hasattr(given, "idf_")


def test_featurizer_objects_without_get_params_are_copied_not_shared(split):
    from ponder._features import TextFeaturizer
    from ponder.routers._features import make_featurizer

    class Plain:  # fit/transform only: no get_params for clone to read
        def __init__(self) -> None:
            self.inner = TextFeaturizer(min_df=1)

        def fit(self, texts, y=None):
            self.inner.fit(texts)
            return self

        def transform(self, texts):
            return self.inner.transform(texts)

    given = Plain()
    made = make_featurizer(given)
    assert made is not given and made.inner is not given.inner
    router = UtilityRouter(featurizer=given).fit(split[0])
    assert router.featurizer_ is not given and not hasattr(given.inner, "idf_")
