"""Train a router from an outcome table and write it with its strategy file (``ponder train
router``). Train rows only: with a ``split`` column the ``test`` rows are left out; a calibration
target holds out a share of the train queries to set the knob on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError
from ._base import BaseRouter
from ._io import ROUTER_KINDS, save_router
from ._live import write_strategy_file

log = logging.getLogger("ponder.routers")


@dataclass(frozen=True)
class TrainedRouter:
    router: BaseRouter
    router_dir: Path
    strategy_file: Path
    n_train: int
    n_calibration: int
    route_cascade_file: Path | None = None


def train_router(
    table: Any,
    kind: str,
    output: str | Path,
    *,
    model_map: dict[str, str] | None = None,
    strong_share: float | None = None,
    budget: float | None = None,
    quality_floor: float | None = None,
    delta: float = 0.1,
    calibration_fraction: float = 0.25,
    seed: int = 0,
    split_column: str = "split",
    cascade: str | Path | None = None,
    knob: float | None = None,
    **params: Any,
) -> TrainedRouter:
    """Fit a ``kind`` router on ``table``'s train rows, optionally calibrate, save to ``output``."""
    from ..evaluation._table import OutcomeTable

    if kind not in ROUTER_KINDS:
        raise ConfigError(f"unknown router kind {kind!r}; use one of {', '.join(ROUTER_KINDS)}")
    cls = ROUTER_KINDS[kind]
    valid = cls._get_param_names()
    router = cls(**{k: v for k, v in params.items() if k in valid and v is not None})
    train = table
    if split_column in table.df.columns:
        per_q = table.df.drop_duplicates("query_id").set_index("query_id")[split_column]
        train_ids = [q for q in table.query_ids if str(per_q[q]).lower() == "train"]
        if train_ids:
            train = table.subset(train_ids)
    calib: OutcomeTable | None = None
    targets = [t for t in (strong_share, budget, quality_floor) if t is not None]
    if len(targets) > 1:
        raise ConfigError("give at most one calibration target (strong share, budget, quality floor)")
    if knob is not None and targets:
        raise ConfigError("give a knob or a calibration target, not both")
    if targets:
        train, calib = train.split(test_fraction=calibration_fraction, seed=seed,
                                   split_column=None)
    router.fit(train)
    if model_map:
        router.check_known(model_map, "model map")
    if calib is not None:
        router.calibrate(calib, strong_share=strong_share, budget=budget,
                         quality_floor=quality_floor, delta=delta)
    out = Path(output)
    router_dir = save_router(router, out / "router")
    strategy = write_strategy_file(out / "router.json", router_dir, kind="router",
                                   name=f"router-{router.kind}", knob=knob, model_map=model_map)
    route_cascade = None
    if cascade is not None:
        route_cascade = write_route_cascade(out / "route-cascade.json", router_dir, cascade,
                                            knob=knob)
    return TrainedRouter(router, router_dir, strategy, len(train.query_ids),
                         0 if calib is None else len(calib.query_ids), route_cascade)


def write_route_cascade(path: str | Path, router_dir: str | Path, cascade: str | Path, *,
                        knob: float | None = None) -> Path:
    """A ``route-cascade`` strategy file: ``router_dir`` picks where ``cascade`` (a cascade
    strategy JSON) starts, with the router's knob unless ``knob`` pins another. Loads both once,
    so a rung the router never saw fails here."""
    import os

    from ..strategies import load_strategy

    path, cascade = Path(path), Path(cascade)
    rel = os.path.relpath(cascade.resolve(), path.parent.resolve())
    out = write_strategy_file(path, router_dir, kind="route-cascade", name="route-cascade",
                              knob=knob, extra={"cascade": rel})
    if rel.startswith("..") or Path(rel).is_absolute():
        log.warning("%s names %s, outside its folder: loading it will need --allow-outside "
                    "(allow_outside=True); keep the cascade beside it to avoid that", out, rel)
    try:
        load_strategy(out, allow_outside=True)
    except Exception:
        out.unlink()
        raise
    return out
