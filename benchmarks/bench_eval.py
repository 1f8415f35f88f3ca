"""Time the evaluator's baselines on a 100,000-row outcome table (target: ≤ 10 s on 2 cores).

    python benchmarks/bench_eval.py [--rows 100000] [--models 10] [--repeat 3]

Stages, each timed separately (best of --repeat):
  read csv   OutcomeTable.read from a CSV file on disk
  validate   OutcomeTable.read on an in-memory DataFrame (column checks, dtype coercion)
  dense      the (query × model) score/cost/present views
  baselines  every single model, random mixes and the oracle (compute_baselines)
  evaluate   the whole evaluate(): split, baselines, metrics, 200 bootstrap resamples, no strategies
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import pandas as pd

from ponder.evaluation import OutcomeTable, evaluate
from ponder.evaluation._baselines import compute_baselines


def synth(rows: int, models: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    q = rows // models
    skill = np.linspace(0.4, 0.9, models)
    price = np.geomspace(1e-5, 1e-2, models)
    hard = rng.random(q)
    score = (rng.random((q, models)) < skill[None, :] * (1.2 - hard[:, None])).astype(float)
    cost = price[None, :] * rng.uniform(0.5, 1.5, (q, models))
    ids = np.char.add("q", np.arange(q).astype(str))
    return pd.DataFrame({
        "query_id": np.repeat(ids, models),
        "query": np.repeat(np.char.add("question ", np.arange(q).astype(str)), models),
        "model": np.tile(np.char.add("m", np.arange(models).astype(str)), q),
        "score": score.ravel(),
        "cost_usd": cost.ravel(),
        "task": np.repeat(np.where(hard > 0.5, "hard", "easy"), models),
    })


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    df = synth(a.rows, a.models)
    t_val, table = best_of(lambda: OutcomeTable.read(df, name="synthetic"), a.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        csv = os.path.join(tmp, "t.csv")
        df.to_csv(csv, index=False)
        t_csv, _ = best_of(lambda: OutcomeTable.read(csv), a.repeat)

    def dense():
        t = OutcomeTable(table.df, name="synthetic")
        return t.scores, t.costs, t.present

    t_dense, _ = best_of(dense, a.repeat)

    def baselines():
        t = OutcomeTable(table.df, name="synthetic")  # fresh: dense views included in the timing
        return compute_baselines(t)

    t_base, base = best_of(baselines, a.repeat)
    t_eval, res = best_of(lambda: evaluate(table, strategies=[], n_bootstrap=200), a.repeat)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}")
    print(f"table: {len(table):,} rows = {len(table.query_ids):,} queries x {len(table.models)} models")
    print(f"read csv  {t_csv:7.3f} s   (OutcomeTable.read from a CSV file, validation included)")
    print(f"validate  {t_val:7.3f} s")
    print(f"dense     {t_dense:7.3f} s")
    print(f"baselines {t_base:7.3f} s   (dense views + {len(base.curves)} baseline curves)")
    print(f"evaluate  {t_eval:7.3f} s   (split, baselines, metrics, 200 bootstrap resamples)")
    d = res.to_json()
    print(f"check: best {d['best_model']['model']} q={d['best_model']['quality']:.4f}, "
          f"oracle q={d['oracle']['quality']:.4f} at ${d['oracle']['cost_usd']:.3g}")


if __name__ == "__main__":
    main()
