"""The evaluator: split an outcome table, fit strategies on train, replay them on test, measure.

    table ──split──▶ train ──fit──▶ strategies ──sweep(test)──▶ curves ─┐
                     test ──────────▶ baselines (models, mixes, oracle) ─┴▶ metrics + bootstrap CIs
                     train ─▶ K-fold calibration ─▶ bounds ─▶ certified picks ─┘  ▶ EvalResult

The curves show what a knob can reach on test (choosing off them uses test labels); the
``deployed`` points and ``ship`` picks are chosen on train rows with a bound (``_deploy``).
Everything the reports show is one JSON-able dict, so the renderings cannot disagree.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._exceptions import PonderError
from . import _deploy as D
from ._baselines import Curve, compute_baselines
from ._bundled import load_dataset
from ._certify import bound_all, deployed_points, ship_picks
from ._measure import (
    Progress,
    _assemble,
    _boot_weights,
    _bootstrap,
    _infer_strong_share,
    task_point,
)
from ._report import render_html, render_markdown
from ._rows import OutcomeRows, compact
from ._strategy import Strategy, default_strategies, registered_strategies
from ._table import OutcomeTable


@dataclass(frozen=True)
class EvalResult:
    """The outcome of :func:`evaluate`: one dict rendered three ways."""

    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)

    def to_markdown(self) -> str:
        return render_markdown(self.data)

    def to_html(self) -> str:
        return render_html(self.data)

    @property
    def strategies(self) -> list[dict[str, Any]]:
        strategies: list[dict[str, Any]] = self.data["strategies"]
        return strategies

    def strategy(self, name: str) -> dict[str, Any]:
        for s in self.strategies:
            if s["name"] == name:
                return s
        raise KeyError(name)


# ---- helpers -----------------------------------------------------------------------------------
def _collect_strategies(
    strategies: Iterable[Strategy | str] | None, train: OutcomeTable
) -> tuple[list[Strategy], list[dict[str, str]]]:
    """Registered ones (all, or those named) plus any strategy objects passed in."""
    skipped: list[dict[str, str]] = []
    registry = registered_strategies()
    out: list[Strategy] = []
    for item in default_strategies() if strategies is None else strategies:
        if isinstance(item, str):
            if item not in registry:
                raise PonderError(
                    f"unknown strategy {item!r}; registered: {', '.join(sorted(registry)) or 'none'}")
            try:
                built = registry[item](train)
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not sink the report
                skipped.append({"name": item, "reason": f"{type(exc).__name__}: {exc}"})
                continue
            if built is not None:
                out.append(built)
        else:
            out.append(item)
    return out, skipped


def _run_strategy(s: Strategy, train: OutcomeTable, test: OutcomeTable) -> Curve:
    s.fit(train)
    points = s.sweep(test)
    q = len(test.query_ids)
    if not points:
        raise PonderError("sweep returned no operating points")
    for i, p in enumerate(points):
        c, v = np.shape(p.cost), np.shape(p.quality)
        if c != (q,) or v != (q,):
            raise PonderError(f"operating point {i} has shape {c}/{v}, expected ({q},)")
    shares = [p.extra.get("strong_share") for p in points]
    share = np.asarray(shares, dtype=float) if all(x is not None for x in shares) else None
    # held compactly (OutcomeRows): one byte a query where a row is the table's own values
    return Curve(str(s.name), str(getattr(s, "kind", "strategy")), [dict(p.setting) for p in points],
                 OutcomeRows(test.costs, (p.cost for p in points)),
                 OutcomeRows(test.scores, (p.quality for p in points)), share)


# ---- the evaluator -----------------------------------------------------------------------------
def evaluate(
    table: OutcomeTable | str | Path | pd.DataFrame,
    *,
    strategies: Sequence[Strategy | str] | None = None,
    test_fraction: float = 0.5,
    seed: int = 0,
    split_column: str | None = "split",
    n_bootstrap: int = 200,
    progress: Progress | None = None,
    source: str | None = None,
    epsilon: float = D.EPSILON,
    delta: float = D.DELTA,
    folds: int | None = None,
    ship_dir: str | Path | None = None,
    model_map: dict[str, str] | None = None,
    command: str | None = None,
    max_fit_queries: int | None = D.MAX_FIT_QUERIES,
    jobs: int | None = None,
) -> EvalResult:
    """Fit strategies on train queries, replay them and all baselines on test queries, measure.

    ``strategies``: None for the default registered ones, else names and/or strategy objects. The
    ``split`` column is used when present, else a seeded ``test_fraction`` is held out. What to
    ship is certified on train rows (``_deploy``): a quality drop of at most ``epsilon`` against
    the best single model, or a budget, at confidence 1 − ``delta``; ``ship_dir`` writes the
    picks' files (``model_map``: live specs for the table's models). ``command`` reproduces the
    run in the report. ``jobs`` threads (default: CPUs, at most 4) give the numbers of ``jobs=1``.
    """
    if not 0.0 < delta < 1.0:
        raise PonderError(f"delta must be in (0, 1), got {delta}")
    if not 0.0 <= epsilon < 1.0:
        raise PonderError(f"epsilon must be in [0, 1) (score units), got {epsilon}")
    for what, value, least in (("folds", folds, 2), ("jobs", jobs, 1),
                               ("max_fit_queries", max_fit_queries, 2)):
        if value is not None and value < least:
            raise PonderError(f"{what} must be at least {least}, got {value}")
    tick: Progress = progress or (lambda stage, i, n: None)
    tbl = (load_dataset(table) if isinstance(table, (str, Path))
           else table if isinstance(table, OutcomeTable) else OutcomeTable.read(table))
    train, test = tbl.split(test_fraction=test_fraction, seed=seed, split_column=split_column)
    uses_column = bool(split_column and split_column in tbl.df.columns)
    tick("baselines", 0, 1)
    base = compute_baselines(test)
    for c in base.curves:
        c.cost, c.quality = compact(test.costs, c.cost), compact(test.scores, c.quality)
    tick("baselines", 1, 1)

    found, skipped = _collect_strategies(strategies, train)
    curves: list[Curve] = list(base.curves)
    deploy = D.plan(train, test, seed=seed, folds=folds, max_fit_queries=max_fit_queries)
    fit_on = D.fit_rows(train, max_fit_queries, seed)
    replays: dict[str, D.Replay | str] = {r.name: r for r in deploy.baselines} if deploy else {}
    fitted: dict[str, Strategy] = {}
    steps = 1 + (deploy.folds if deploy else 0)
    with _frozen_heap(), _workers(jobs) as run:

        def start(s: Strategy) -> tuple[Any, list[Any] | None]:
            spare = D.fresh_copy(s)
            full = run(partial(_run_strategy, s, fit_on, test))
            return full, (D.fold_fits(spare, deploy, run) if deploy is not None and spare
                          else None)

        # the next strategy's fits are queued before this one's replays, so no core waits at a
        # strategy's end (jobs = 1: each job runs when asked for, in the order of a plain loop)
        upcoming = start(found[0]) if found else None
        for i, s in enumerate(found):
            stage = f"strategy {getattr(s, 'name', i)}"
            tick(stage, 0, steps)
            assert upcoming is not None
            full, fits = upcoming
            upcoming = start(found[i + 1]) if i + 1 < len(found) else None
            try:
                curve = full.result()
            except Exception as exc:  # noqa: BLE001 - report it, keep the other strategies
                warnings.warn(f"strategy {getattr(s, 'name', s)!r} skipped: {exc}", stacklevel=2)
                skipped.append({"name": str(getattr(s, "name", s)),
                                "reason": f"{type(exc).__name__}: {exc}"})
                for job in fits or ():
                    job.cancel()
                tick(stage, steps, steps)
                continue
            tick(stage, 1, steps)
            curves.append(curve)
            fitted[curve.name] = s
            if deploy is not None and fits is None:
                replays[curve.name] = "the strategy object cannot be copied for the fold fits"
            elif deploy is not None and fits is not None:
                try:
                    replays[curve.name] = D.calibrate(
                        fits, curve, deploy, tick=lambda k, stage=stage: tick(stage, 1 + k, steps),
                        run=run)
                except Exception as exc:  # noqa: BLE001 - the test curve still stands
                    replays[curve.name] = f"K-fold calibration failed: {type(exc).__name__}: {exc}"
            _give_back_memory()
            tick(stage, steps, steps)

    two = len(base.models) == 2
    weak = 1 - base.best if two else None
    for c in curves if two else []:
        if c.strong_share is None:
            c.strong_share = _infer_strong_share(c, test, base.best)

    data = _assemble(tbl, train, test, base, curves, skipped, two=two, weak=weak,
                     split={"method": "column" if uses_column else "random",
                            "column": split_column if uses_column else None,
                            "test_fraction": None if uses_column else test_fraction,
                            "seed": None if uses_column else seed})
    w = _boot_weights(len(test.query_ids), n_bootstrap, seed) if n_bootstrap > 0 else None
    data["source"] = source or (str(table) if isinstance(table, (str, Path)) else tbl.name)
    data["command"] = command
    data["fit_sample"] = {"max_fit_queries": max_fit_queries, "n_fit_queries": len(fit_on.query_ids)}
    tick("certifying", 0, 1)
    _attach_deployed(data, deploy, replays, test, w, epsilon=epsilon, delta=delta, seed=seed,
                     jobs=jobs)
    tick("certifying", 1, 1)
    if ship_dir is not None and data["ship"]:
        D.write_ship(data["ship"], fitted, ship_dir, model_map=model_map)
        data["ship_dir"] = str(ship_dir)
    if w is not None:
        _bootstrap(data, test, base, curves, w, weak, tick)
    return EvalResult(D.jsonable(data))


@contextmanager
def _workers(jobs: int | None) -> Iterator[D.Run]:
    """In order on this thread, or on ``jobs`` threads: fits and replays spend their time in
    numpy, BLAS and liblinear, which release the GIL."""
    n = min(4, os.cpu_count() or 1) if jobs is None else jobs
    if n <= 1:
        yield D.Later
        return
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="ponder-eval") as pool:
        yield pool.submit


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the tables (millions of strings) out of the collector's full passes while strategies
    fit: each pass would walk them again (a fifth of a cascade's fit at 10^4 queries). Left alone
    when the caller froze objects itself (``gc.unfreeze`` would thaw theirs too)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _give_back_memory() -> None:
    """glibc keeps freed memory in each thread's arena: ``malloc_trim`` returns the fits' pages."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _attach_deployed(data: dict[str, Any], deploy: D.Plan | None,
                     replays: dict[str, D.Replay | str], test: OutcomeTable,
                     w: np.ndarray | None, *, epsilon: float, delta: float, seed: int = 0,
                     jobs: int | None = None) -> None:
    """Each strategy's ``deployed`` list, the ``deployment`` summary, the ``ship`` picks, and
    per-task figures at the deployed headline setting."""
    data["ship"] = []
    usable = [r for r in replays.values() if isinstance(r, D.Replay)]
    if deploy is None:
        data["deployment"] = {"method": "none", "targets": list(D.TARGETS), "epsilon": epsilon,
                              "delta": delta,
                              "note": "train has under two queries: nothing to choose settings on"}
    else:
        ref = deploy.reference
        with _workers(jobs) as run:  # the bounds of each slice of candidates on a thread
            bounds = bound_all(usable, ref, epsilon=epsilon, delta=delta, seed=seed, run=run)
        data["ship"] = ship_picks(usable, bounds, deploy, w, seed=seed)
        data["deployment"] = {
            "method": "k-fold calibration", "folds": deploy.folds,
            "n_calibration_queries": len(deploy.train.query_ids), "targets": list(D.TARGETS),
            "epsilon": epsilon, "delta": delta, "confidence": 1 - delta,
            "n_candidates": bounds.m,
            "correction": f"union bound over the {bounds.m} candidates tried (every strategy × "
                          "setting and every single model but the best)",
            "bound_method": "Waudby-Smith–Ramdas betting confidence bounds on paired per-query "
                            "differences (quality drop; spend against the best model's)",
            "best_model": {"model": ref.model,
                           "calibration": {"cost_usd": ref.cal_mean_cost,
                                           "quality": D._mean(ref.cal_quality)},
                           "test": {"cost_usd": D._mean(ref.test_cost),
                                    "quality": D._mean(ref.test_quality)}},
            "note": f"settings are calibrated by {deploy.folds}-fold cross-fitting on the train "
                    "rows (each fold's copy fitted on the other folds) and the strategy that "
                    "ships is the one fitted on every train row; 'calibration' figures are on "
                    "the pooled held-out folds, targets are relative to the best single model "
                    "chosen on train"}
    tasks = np.asarray(test.tasks, dtype=object)
    by_task = {t["task"]: t for t in data.get("tasks") or []}
    usable_names = [r.name for r in usable]
    for s in data["strategies"]:
        s["deployed"], s["deployed_target"], s["deployed_note"] = [], None, None
        r = replays.get(s["name"])
        chosen: dict[str, int] = {}
        if s["name"] == "oracle":
            s["deployed_note"] = D.ORACLE_NOTE
        elif deploy is None:
            s["deployed_note"] = data["deployment"]["note"]
        elif isinstance(r, str) or r is None:
            s["deployed_note"] = r or "not calibrated"
        else:
            k = usable_names.index(s["name"])
            s["deployed"], chosen = deployed_points(r, k, bounds, deploy.reference, w)
            # the target of its one-number summaries
            s["deployed_target"] = next((t for t in ("best_quality", "budget:1.0") if t in chosen),
                                        None)
            if s["name"] == "random-mix":
                s["deployed_note"] = D.MIX_NOTE
        if s["kind"] == "baseline":
            continue
        head = s["deployed_target"]
        for t, row in by_task.items():  # the test-chosen headline point is not deployable
            row["strategies"][s["name"]] = (
                {"quality": None, "cost_usd": None, "at": None}
                if head is None or not isinstance(r, D.Replay)
                else {**task_point(r.test_cost, r.test_quality, chosen[head], tasks == t),
                      "at": head})
