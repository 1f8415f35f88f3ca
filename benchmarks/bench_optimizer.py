"""How fast is the chain optimizer? 11 models × 2,205 train queries → 1,111 chains of length 1-3.

Run:  python benchmarks/bench_optimizer.py [--scores oof.npz] [--thresholds 32]
With ``--scores`` (an npz with s1, s2 saved by a previous run) the real out-of-fold scores of
RouterBench are used; otherwise the scores are computed once (cross-fitting, minutes) and cached
there. The optimizer's time does not depend on the score values, only on Q, M, L and G.
Compares with a per-point evaluation loop (what a FrugalGPT-style search does: evaluate every
chain and threshold combination separately), timed on a sample and extrapolated.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _cascade_data as data  # noqa: E402

from ponder.cascade import crossfit_scores, optimize_chains  # noqa: E402


def _per_point(Y, C, s1, s2, chain, th):  # type: ignore[no-untyped-def]
    """One (chain, thresholds) point evaluated on its own, vectorised over queries only."""
    answered = np.zeros(Y.shape[0], dtype=bool)
    q = np.zeros(Y.shape[0])
    c = np.zeros(Y.shape[0])
    for k, m in enumerate(chain):
        reach = ~answered
        c += np.where(reach, C[:, m], 0.0)
        if k == len(chain) - 1:
            acc = reach
        else:
            sc = s1[:, m] if k == 0 else s2[:, m, chain[k - 1]]
            acc = reach & (sc >= th[k])
        q = np.where(acc, Y[:, m], q)
        answered |= acc
    return q.mean(), c.mean()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scores", default="/tmp/ponder_rb_oof.npz")
    ap.add_argument("--thresholds", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    train, _ = data.routerbench().split()
    Y, C = train.scores, train.costs
    if Path(a.scores).exists():
        z = np.load(a.scores)
        s1, s2 = z["s1"], z["s2"]
    else:
        t0 = time.perf_counter()
        s1, s2 = crossfit_scores(train, folds=5)
        print(f"cross-fitted scores (5 folds, logistic scorer): {time.perf_counter() - t0:.1f}s")
        np.savez(a.scores, s1=s1, s2=s2)
    nq, nm = Y.shape
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        F = optimize_chains(s1, s2, Y, C, max_length=3, n_thresholds=a.thresholds)
        times.append(time.perf_counter() - t0)
    n_points = len(F.cost)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numpy {np.__version__}, python {platform.python_version()}")
    print(f"optimize_chains: {nq} queries × {nm} models, {F.n_chains} chains (length 1-3), "
          f"G={a.thresholds} thresholds per rung → {n_points:,} operating points in "
          f"{min(times):.2f}s (best of {a.repeats}; all: {', '.join(f'{t:.2f}' for t in times)})")
    t0 = time.perf_counter()
    for b in np.geomspace(F.cost.min(), F.cost.max(), 100):
        F.best_for_budget(float(b))
    print(f"100 budget lookups on the frontier: {time.perf_counter() - t0:.3f}s; "
          f"Pareto points: {len(F.pareto())}")
    rng = np.random.default_rng(0)
    sample = rng.choice(n_points, 2000, replace=False)
    t0 = time.perf_counter()
    for i in sample:
        chain = [int(m) for m in F.chains[i] if m >= 0]
        q, c = _per_point(Y, C, s1, s2, chain, F.thresholds[i])
        assert abs(q - F.quality[i]) < 1e-9 and abs(c - F.cost[i]) < 1e-12
    per = (time.perf_counter() - t0) / sample.size
    print(f"per-point evaluation (FrugalGPT-style loop): {per * 1e6:.0f} µs/point → "
          f"{per * n_points:.0f}s for all {n_points:,} points "
          f"({per * n_points / min(times):.0f}× slower); the 2,000 sampled points agree exactly")


if __name__ == "__main__":
    main()
