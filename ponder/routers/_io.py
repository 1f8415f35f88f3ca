"""Save and load routers as JSON + npz through :mod:`ponder._persist` (version + content hash;
a tampered or foreign file raises ModelFileError, and nothing is unpickled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import _persist
from .._exceptions import ModelFileError
from ._base import BaseRouter, Calibration, check_is_fitted
from ._features import featurizer_from_state, featurizer_spec, featurizer_state
from ._knn import KNNRouter
from ._mf import MFRouter
from ._pairwise import PairwiseRouter
from ._utility import UtilityRouter

ROUTER_KINDS: dict[str, type[BaseRouter]] = {
    "pairwise": PairwiseRouter,
    "utility": UtilityRouter,
    "knn": KNNRouter,
    "mf": MFRouter,
}
_PERSIST_KIND = "router"


def save_router(router: BaseRouter, directory: str | Path) -> Path:
    """Write a fitted router to ``directory`` (meta.json + arrays.npz)."""
    check_is_fitted(router)
    params = router.get_params()
    params["featurizer"] = featurizer_spec(params.get("featurizer"))
    f_meta, f_arrays = featurizer_state(router.featurizer_)
    meta: dict[str, Any] = {
        "router_kind": router.kind,
        "params": params,
        "models": list(router.models_),
        "strong": int(router.strong_),
        "knob": float(router.knob_),
        "n_train": int(router.n_train_),
        "calibration": router.calibration_.to_dict() if router.calibration_ else None,
        "featurizer": f_meta,
        "extra": {k: getattr(router, k) for k in ("relaxation_", "label_mean_", "n_iter_")
                  if hasattr(router, k)},
    }
    arrays = {"cost_intercept": router.cost_intercept_, "cost_slope": router.cost_slope_,
              "train_quality": router.train_quality_}
    arrays |= {f"r_{k}": v for k, v in router._state_arrays().items()}
    arrays |= {f"f_{k}": v for k, v in f_arrays.items()}
    return _persist.save(directory, meta, arrays, kind=_PERSIST_KIND)


def load_router(directory: str | Path) -> BaseRouter:
    """Load a router saved by :func:`save_router`; raises ModelFileError if it is not one."""
    meta, arrays = _persist.load(directory, kind=_PERSIST_KIND)
    where = str(directory)
    kind = meta.get("router_kind")
    cls = ROUTER_KINDS.get(str(kind))
    if cls is None:
        raise ModelFileError(f"unknown router kind {kind!r}", path=where)
    try:
        router = cls(**meta["params"])
        router.models_ = [str(m) for m in meta["models"]]
        router.strong_ = int(meta["strong"])
        router.knob_ = float(meta["knob"])
        router.n_train_ = int(meta["n_train"])
        cal = meta.get("calibration")
        router.calibration_ = Calibration(**cal) if cal else None
        for k, v in meta.get("extra", {}).items():
            setattr(router, k, v)
        router.cost_intercept_ = np.asarray(arrays["cost_intercept"], dtype=float)
        router.cost_slope_ = np.asarray(arrays["cost_slope"], dtype=float)
        router.train_quality_ = np.asarray(arrays["train_quality"], dtype=float)
        router._set_state_arrays({k[2:]: v for k, v in arrays.items() if k.startswith("r_")})
        router.featurizer_ = featurizer_from_state(
            meta["featurizer"], {k[2:]: v for k, v in arrays.items() if k.startswith("f_")})
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"router file is incomplete or inconsistent ({exc})", path=where) from None
    if len(router.cost_intercept_) != len(router.models_):
        raise ModelFileError("router file is inconsistent (models vs cost model)", path=where)
    return router
