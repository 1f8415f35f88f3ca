"""Save and load routers as JSON + npz through :mod:`ponder._persist`: nothing is unpickled, and
loading reads only the fields the router format defines, each type-checked."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from .. import _persist
from .._exceptions import ConfigError, ModelFileError
from .._features import prefixed
from ._base import BaseRouter, Calibration, check_is_fitted
from ._features import featurizer_from_state
from ._knn import KNNRouter
from ._mf import MFRouter
from ._pairwise import PairwiseRouter
from ._utility import UtilityRouter

# The one list of router kinds: `ponder train router --kind`, loading and the router-KIND strategies.
ROUTER_KINDS: dict[str, type[BaseRouter]] = {
    "pairwise": PairwiseRouter,
    "utility": UtilityRouter,
    "knn": KNNRouter,
    "mf": MFRouter,
}
_PERSIST_KIND = "router"


def save_router(router: BaseRouter, directory: str | Path) -> Path:
    check_is_fitted(router)
    params = router.get_params(deep=False)
    spec = params.get("featurizer")  # a name; the state is saved separately
    params["featurizer"] = (spec or "tfidf") if spec is None or isinstance(spec, str) else type(spec).__name__
    if not hasattr(router.featurizer_, "to_state"):
        raise ConfigError(f"featurizer {type(router.featurizer_).__name__} cannot be saved "
                          "(it has no to_state); use 'tfidf' or 'minilm'")
    f_meta, f_arrays = router.featurizer_.to_state()
    meta: dict[str, Any] = {
        "router_kind": router.kind,
        "params": params,
        **{k: conv(getattr(router, k + "_")) for k, conv in _FITTED.items()},
        "calibration": router.calibration_.to_dict() if router.calibration_ else None,
        "featurizer": f_meta,
        "extra": {k: getattr(router, k) for k in _EXTRA_FIELDS if hasattr(router, k)},
    }
    arrays = {k: getattr(router, k + "_") for k in _ARRAYS}
    arrays |= {f"r_{k}": v for k, v in router._state_arrays().items()}
    arrays |= {f"f_{k}": v for k, v in f_arrays.items()}
    return _persist.save(directory, meta, arrays, kind=_PERSIST_KIND)


_FITTED: dict[str, Any] = {"models": list, "strong": int, "knob": float, "n_train": int}  # k → k_
# What a router file holds: exactly these fields, with these types (see _persist.check_fields).
_META_FIELDS: dict[str, Any] = {"router_kind": str, "params": dict, **_FITTED, "models": list[str],
                                "calibration": dict | None, "featurizer": dict, "extra": dict}
_REQUIRED = ("router_kind", "params", *_FITTED, "featurizer")
_EXTRA_FIELDS: dict[str, Any] = {"relaxation_": float, "label_mean_": float, "n_iter_": int}
_ARRAYS = ("cost_intercept", "cost_slope", "train_quality")


def _check_meta(meta: dict[str, Any], where: str) -> type[BaseRouter]:
    """Validate every field of a router file; the router class it names."""
    _persist.check_fields(meta, _META_FIELDS, where=where, what="meta", required=_REQUIRED)
    kind = meta["router_kind"]
    cls = ROUTER_KINDS.get(kind)
    if cls is None:
        raise ModelFileError(f"unknown router kind {kind!r}", path=where)
    _persist.check_fields(meta["params"], _persist.init_fields(cls), where=where, what="params")
    if not meta["models"] or not 0 <= meta["strong"] < len(meta["models"]) or meta["n_train"] < 0:
        raise ModelFileError("meta.json: models, strong and n_train are inconsistent", path=where)
    if meta.get("calibration") is not None:
        required = tuple(f.name for f in dataclasses.fields(Calibration)
                         if f.default is dataclasses.MISSING)
        _persist.check_fields(meta["calibration"], _persist.init_fields(Calibration), where=where,
                              what="calibration", required=required)
    _persist.check_fields(meta.get("extra", {}), _EXTRA_FIELDS, where=where, what="extra")
    _persist.check_fields(meta["featurizer"], {"type": str, "params": dict, "parts": list},
                          where=where, what="featurizer", required=("type",))
    return cls


def load_router(directory: str | Path, *, max_bytes: int | None = None) -> BaseRouter:
    """A router saved by :func:`save_router`; ModelFileError for any field the format does not
    define (the content hash is a checksum, not a signature)."""
    meta, arrays = _persist.load(directory, kind=_PERSIST_KIND, max_bytes=max_bytes)
    where = str(directory)
    cls = _check_meta(meta, where)
    unknown = sorted(k for k in arrays if k not in _ARRAYS and not k.startswith(("r_", "f_")))
    if unknown:
        raise ModelFileError(f"arrays.npz: unknown array {unknown[0]!r} in a router file",
                             path=where)
    try:
        router = cls(**meta["params"])
        for k, conv in _FITTED.items():
            setattr(router, k + "_", conv(meta[k]))
        cal = meta.get("calibration")
        router.calibration_ = Calibration(**cal) if cal else None
        for k, v in meta.get("extra", {}).items():
            setattr(router, k, _EXTRA_FIELDS[k](v))
        for k in _ARRAYS:
            setattr(router, k + "_", np.asarray(arrays[k], dtype=float))
        router._set_state_arrays(prefixed(arrays, "r_"))
        router.featurizer_ = featurizer_from_state(
            meta["featurizer"], prefixed(arrays, "f_"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"router file is incomplete or inconsistent ({exc})", path=where) from None
    if len(router.cost_intercept_) != len(router.models_):
        raise ModelFileError("router file is inconsistent (models vs cost model)", path=where)
    return router
