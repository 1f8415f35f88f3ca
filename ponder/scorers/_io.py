"""An AnswerScorer as JSON + npz through :mod:`ponder._persist`; loading reads only the fields
the format defines, each type-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .. import _persist
from .._exceptions import ModelFileError
from .._features import RESPONSE_STAT_NAMES, TextFeaturizer, featurizer_from_state, prefixed
from ._combiners import LEARNERS
from ._signals import SIGNAL_NAMES

KIND = "ponder-scorer"
_Scorer = TypeVar("_Scorer")  # AnswerScorer, which imports this module (so not named here)

# What a scorer file holds: exactly these fields and arrays (see _persist.check_fields).
_META_FIELDS: dict[str, Any] = {
    "params": dict, "models": list[str], "stat_names": list[str], "n_features_in": int,
    "query_features": dict, "response_features": dict, "learner_state": str, "calibrator": str,
    "signals": list[str],
}
_ARRAYS = ("dense_mean", "dense_scale", "text_coef", "text_intercept", "coef", "intercept",
           "cal_a", "cal_b")
_ARRAY_PREFIXES = ("qf__", "rf__", "tree__")
_FITTED = ("dense_mean", "dense_scale", "text_coef", "text_intercept")  # arrays of every scorer


def save_scorer(scorer: Any, directory: str | Path) -> Path:
    meta: dict[str, Any] = {"params": scorer.get_params(deep=False),
                            "models": list(scorer.models_),
                            "stat_names": list(RESPONSE_STAT_NAMES),
                            "n_features_in": int(scorer.n_features_in_)}
    if scorer.signals_:  # written only when used: files without signals stay as they were
        meta["signals"] = list(scorer.signals_)
    arrays: dict[str, np.ndarray] = {k: getattr(scorer, k + "_") for k in _FITTED}
    for name, prefix, f in (("query_features", "qf__", scorer._query_features()),
                            ("response_features", "rf__", scorer._response_features())):
        if f is not None:
            meta[name], a = f.to_state()
            arrays |= {prefix + k: v for k, v in a.items()}
    if hasattr(scorer, "coef_"):
        meta["learner_state"] = "logistic"
        arrays["coef"] = scorer.coef_
        arrays["intercept"] = np.array([scorer.intercept_])
    else:
        meta["learner_state"] = "hgb"
        arrays.update({f"tree__{k}": v for k, v in scorer.trees_.items()})
    if scorer.calibrator_ is not None:
        meta["calibrator"] = scorer.calibrator_[0]
        arrays["cal_a"], arrays["cal_b"] = scorer.calibrator_[1], scorer.calibrator_[2]
    return _persist.save(directory, meta, arrays, kind=KIND)


def load_scorer(cls: type[_Scorer], directory: str | Path, *,
                max_bytes: int | None = None) -> _Scorer:
    meta, arrays = _persist.load(directory, kind=KIND, max_bytes=max_bytes)
    _check_file(cls, meta, arrays, str(directory))
    try:
        obj: Any = cls(**meta["params"])
        obj.models_ = list(meta["models"])
        obj.n_features_in_ = int(meta["n_features_in"])
        obj.signals_ = tuple(meta.get("signals", ()))  # absent: a scorer from before signals
        for name in _FITTED:
            setattr(obj, name + "_", arrays[name])
        if "query_features" in meta:
            obj.query_features_ = featurizer_from_state(meta["query_features"],
                                                        prefixed(arrays, "qf__"))
        if "response_features" in meta:
            obj.response_features_ = featurizer_from_state(
                meta["response_features"], prefixed(arrays, "rf__"), (TextFeaturizer,))
        if meta["learner_state"] == "logistic":
            obj.coef_ = arrays["coef"]
            obj.intercept_ = float(arrays["intercept"][0])
        else:
            obj.trees_ = prefixed(arrays, "tree__")
        obj.calibrator_ = ((meta["calibrator"], arrays["cal_a"], arrays["cal_b"])
                           if "calibrator" in meta else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"scorer file is incomplete or inconsistent ({exc})",
                             path=str(directory)) from None
    scorer: _Scorer = obj
    return scorer


def _check_file(cls: type, meta: dict[str, Any], arrays: dict[str, np.ndarray], where: str) -> None:
    _persist.check_fields(meta, _META_FIELDS, where=where, what="meta",
                          required=("params", "models", "n_features_in", "learner_state"))
    _persist.check_fields(meta["params"], _persist.init_fields(cls), where=where, what="params")
    if meta["learner_state"] not in LEARNERS:
        raise ModelFileError(f"meta.json: learner_state must be one of {LEARNERS}, got "
                             f"{meta['learner_state']!r}", path=where)
    unknown_signals = [s for s in meta.get("signals", ()) if s not in SIGNAL_NAMES]
    if unknown_signals:
        raise ModelFileError(f"meta.json: unknown signal {unknown_signals[0]!r} (this ponder knows "
                             f"{', '.join(SIGNAL_NAMES)})", path=where)
    if meta.get("calibrator", "sigmoid") not in ("sigmoid", "isotonic"):
        raise ModelFileError(f"meta.json: unknown calibrator {meta['calibrator']!r}", path=where)
    unknown = sorted(k for k in arrays if k not in _ARRAYS and not k.startswith(_ARRAY_PREFIXES))
    if unknown:
        raise ModelFileError(f"arrays.npz: unknown array {unknown[0]!r} in a scorer file",
                             path=where)
