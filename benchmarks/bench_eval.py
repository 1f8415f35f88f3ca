"""Time ``ponder eval`` on a synthetic outcome table, stage by stage (issue 21: 100,000 queries ×
8 models with the default strategies in ≤ 60 s and ≤ 2 GB peak RSS on 2 cores).

    python benchmarks/bench_eval.py [--queries 100000] [--models 8] [--strategies default] [--jobs N]
                                    [--format parquet] [--bootstrap 200] [--json out.json]
    python benchmarks/bench_eval.py --rows 100000 --models 10 --strategies none  # baselines only

``--strategies``: ``default`` (what plain ``ponder eval`` runs), ``none`` (baselines only) or a
comma-separated list of strategy names. Stages, timed once each (wall clock):

  load       OutcomeTable.read of the table written to disk (parquet or csv), validation included
  split      OutcomeTable.split (train / test) and the dense (query × model) views
  evaluate   the whole evaluate() call, and inside it:
    baselines          single models, random mixes, oracle on test
    <strategy> fit     summed over the full-train fit and the K-fold copies' fits
    <strategy> sweep   sweeping the knob on test
    <strategy> replay  K-fold replays of the deployed settings on the held folds
    <strategy> total   from the strategy's first to its last progress tick (fit+sweep+folds)
    certifying         bounds, deployed points, ship picks
    bootstrap          bootstrap intervals over the test curves
peak RSS is the process's (ru_maxrss); the synthetic table is made and written by a child
process first, so it counts ponder's reading of the file onward.

The script uses only ``OutcomeTable`` and ``evaluate(..., progress=)``, so it runs unchanged on
an older tree: ``PYTHONPATH=/tmp/base python benchmarks/bench_eval.py`` compares.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from ponder.evaluation import OutcomeTable, evaluate
from ponder.evaluation._strategy import registered_strategies


def synth(queries: int, models: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    q = queries
    skill = np.linspace(0.4, 0.9, models)
    price = np.geomspace(1e-5, 1e-2, models)
    hard = rng.random(q)
    score = (rng.random((q, models)) < skill[None, :] * (1.2 - hard[:, None])).astype(float)
    cost = price[None, :] * rng.uniform(0.5, 1.5, (q, models))
    ids = np.char.add("q", np.arange(q).astype(str))
    words = np.array(["alpha", "beta", "gamma", "delta", "prove", "sum", "code", "list", "why",
                      "explain", "integral", "sort", "graph", "poem", "translate", "table"])
    text = [" ".join(words[rng.integers(0, len(words), 6)]) + f" {i}" for i in range(q)]
    return pd.DataFrame({
        "query_id": np.repeat(ids, models),
        "query": np.repeat(np.asarray(text, dtype=object), models),
        "model": np.tile(np.char.add("m", np.arange(models).astype(str)), q),
        "score": score.ravel(),
        "cost_usd": cost.ravel(),
        "task": np.repeat(np.where(hard > 0.5, "hard", "easy"), models),
    })


def write_table(path: str, queries: int, models: int, fmt: str) -> None:
    df = synth(queries, models)
    (df.to_parquet if fmt == "parquet" else df.to_csv)(path, index=False)


TIMES: dict[str, float] = defaultdict(float)


class Timed:
    """A strategy whose fit/sweep/replay add their wall time to TIMES (copies share TIMES)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, attr: str) -> Any:
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def _timed(self, what: str, fn: Any, *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            TIMES[f"{self.inner.name} {what}"] += time.perf_counter() - t

    def fit(self, train: OutcomeTable) -> Timed:
        self._timed("fit", self.inner.fit, train)
        return self

    def sweep(self, test: OutcomeTable) -> Any:
        return self._timed("sweep", self.inner.sweep, test)

    def replay(self, test: OutcomeTable, settings: Any) -> Any:
        return self._timed("replay", self.inner.replay, test, settings)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=None, help="rows instead: queries = rows // models")
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--strategies", default="default")
    ap.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--json", default=None, help="also write the stage times here")
    ap.add_argument("--jobs", type=int, default=None,
                    help="evaluate(jobs=N) (default: evaluate's own default; older trees lack it)")
    a = ap.parse_args()
    if a.rows is not None:
        a.queries = a.rows // a.models
    stages: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"t.{a.format}")
        # the table is made in a child process: a user's table is on disk already, and the
        # peak RSS below is then ponder's own
        child = mp.get_context("spawn").Process(target=write_table,
                                                args=(path, a.queries, a.models, a.format))
        child.start()
        child.join()
        if child.exitcode:
            raise SystemExit(f"making the synthetic table failed (exit {child.exitcode})")
        t = time.perf_counter()
        table = OutcomeTable.read(path)
        stages["load"] = time.perf_counter() - t
    t = time.perf_counter()
    train, test = table.split(test_fraction=0.5, seed=0)
    for part in (train, test):
        part.scores, part.costs, part.present  # noqa: B018 - the dense views are part of it
    stages["split"] = time.perf_counter() - t

    if a.strategies == "none":
        wanted: list[Any] = []
    else:
        names = (None if a.strategies == "default" else a.strategies.split(","))
        from ponder.evaluation._strategy import default_strategies

        reg = registered_strategies()
        wanted = []
        for n in names or default_strategies():
            s = reg[n](train)
            if s is not None:
                wanted.append(Timed(s))
    ticks: dict[str, list[float]] = defaultdict(list)
    order: list[str] = []

    def tick(stage: str, i: int, n: int) -> None:
        ticks[stage].append(time.perf_counter())
        if stage not in order:
            order.append(stage)

    t = time.perf_counter()
    extra = {} if a.jobs is None else {"jobs": a.jobs}
    res = evaluate(table, strategies=wanted, n_bootstrap=a.bootstrap, progress=tick, **extra)
    stages["evaluate"] = time.perf_counter() - t
    for st in order:
        if st != "strategies":
            stages[f"  {st}"] = ticks[st][-1] - ticks[st][0]
    # strategy i runs from tick i*steps to (i+1)*steps: the ticks carry no name, so pair them
    # with the strategies that were fitted, in order
    st_ticks = ticks.get("strategies", [])
    for key in sorted(TIMES, key=lambda k: (k.rsplit(" ", 1)[0], k)):
        stages[f"  {key}"] = TIMES[key]
    if wanted and st_ticks:
        stages["  strategies (all)"] = st_ticks[-1] - st_ticks[0]
    rss = peak_rss_mb()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}")
    print(f"table: {len(table):,} rows = {len(table.query_ids):,} queries x {len(table.models)} "
          f"models ({a.format}); strategies: {a.strategies}; bootstrap {a.bootstrap}")
    for k, v in stages.items():
        print(f"{k:34s} {v:9.2f} s")
    print(f"{'peak RSS':34s} {rss:9.0f} MB")
    d = res.to_json()
    print("check: " + ", ".join(f"{s['name']} auc={s.get('auc') or 0:.4f}"
                                for s in d["strategies"] if s["kind"] != "baseline"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"queries": a.queries, "models": a.models, "jobs": a.jobs, "stages": stages,
                       "peak_rss_mb": rss, "strategies": a.strategies,
                       "auc": {s["name"]: s.get("auc") for s in d["strategies"]},
                       "ship": [[x["target"], x["strategy"], x["setting"], x.get("bound")]
                                for x in d["ship"]]},
                      f, indent=1, default=str)


if __name__ == "__main__":
    main()
