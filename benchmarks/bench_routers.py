"""Router benchmarks: held-out quality vs cost on RouterBench, RouteLLM-style metrics on RouteLLM's
GSM8K and MMLU outcomes (5-fold CV grouped by query), and decision latency per query.

    python benchmarks/bench_routers.py                  # everything, writes benchmarks/results/routers.md
    python benchmarks/bench_routers.py --only latency   # one part: routerbench | routellm | latency | routecascade
    python benchmarks/bench_routers.py --minilm         # also the MiniLM-embedding routers

Data: ../shared/data/routerbench-subset (RouterDC's train/test split in ``routerdc_split``; the
RouterBench loader of ``ponder.evaluation`` merges the 14 split sample ids) and the bundled
``routellm-gsm8k`` / ``routellm-mmlu`` tables. Latency runs with 2 threads pinned to 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("PONDER_SHARED", ROOT.parent / "shared")) / "data"
ROUTERBENCH = SHARED / "routerbench-subset" / "routerbench_0shot_subset.csv"
OUT = ROOT / "benchmarks" / "results"
STRONG = "gpt-4-1106-preview"


def _routers(minilm: bool, cost_model: str = "length", minilm_fast: bool = False) -> dict[str, Any]:
    """Router factories. ``cost_model="mean"`` for the RouteLLM pair: the λ rule then ranks
    queries by predicted quality gain alone, like a threshold on a win probability."""
    from ponder.routers import KNNRouter, MFRouter, PairwiseRouter, UtilityRouter

    cm = {"cost_model": cost_model}
    out = {
        "pairwise-det (TF-IDF)": lambda: PairwiseRouter(variant="deterministic"),
        "pairwise-prob (TF-IDF)": lambda: PairwiseRouter(variant="probabilistic"),
        "pairwise-trans (TF-IDF)": lambda: PairwiseRouter(variant="transformed"),
        "utility LR C=1, no recalibration (TF-IDF)": lambda: UtilityRouter(C=1.0, recalibrate=None, **cm),
        "utility LR C=0.1 + Platt (TF-IDF, default)": lambda: UtilityRouter(**cm),
        "kNN k=100 LSA-128 (TF-IDF)": lambda: KNNRouter(**cm),
        "kNN k=100 raw cosine (TF-IDF)": lambda: KNNRouter(n_components=None, **cm),
        "MF d=16 (TF-IDF)": lambda: MFRouter(**cm),
    }
    if minilm:
        out |= {
            "utility LR C=0.1 + Platt (MiniLM)": lambda: UtilityRouter(featurizer=_cached("minilm"), **cm),
            "utility LR C=0.1 + Platt (TF-IDF + MiniLM)":
                lambda: UtilityRouter(featurizer=_cached("tfidf+minilm"), **cm),
            "kNN k=100 (MiniLM)": lambda: KNNRouter(featurizer=_cached("minilm"), **cm),
            "MF d=16 (MiniLM)": lambda: MFRouter(featurizer=_cached("minilm"), **cm),
        }
    if minilm_fast:
        out = {k: v for k, v in out.items() if k.startswith("utility LR C=0.1")}
        out |= {
            "utility LR C=0.1 + Platt (MiniLM fast: 600 chars, 128 tokens, int8)":
                lambda: UtilityRouter(featurizer=_cached("minilm-fast"), **cm),
            "kNN k=100 (MiniLM fast)": lambda: KNNRouter(featurizer=_cached("minilm-fast"), **cm),
            "MF d=16 (MiniLM fast)": lambda: MFRouter(featurizer=_cached("minilm-fast"), **cm),
        }
    return out


_EMB_CACHE: dict[tuple[bool, int, str], np.ndarray] = {}


def _cached(spec: str) -> Any:
    """The router's own featurizer, with MiniLM embeddings memoised across routers in this
    process (the benchmark fits several routers on the same queries; latency is measured with
    the plain featurizer)."""
    from ponder.routers._features import ConcatFeaturizer, TailEmbedder, make_featurizer

    class MemoTail(TailEmbedder):
        def transform(self, texts: list[str]) -> np.ndarray:
            key = (bool(self.fast), int(self.max_chars))
            todo = [t for t in dict.fromkeys(texts) if (*key, t) not in _EMB_CACHE]
            if todo:
                for t, e in zip(todo, super().transform(todo), strict=True):
                    _EMB_CACHE[(*key, t)] = e
            return np.stack([_EMB_CACHE[(*key, t)] for t in texts])

        def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
            return TailEmbedder.to_state(self)

    f = make_featurizer(spec)
    if isinstance(f, TailEmbedder):
        return MemoTail(f.max_chars, f.fast)
    assert isinstance(f, ConcatFeaturizer)
    return ConcatFeaturizer([p if not isinstance(p, TailEmbedder) else MemoTail(p.max_chars, p.fast)
                             for p in (f.parts or [])])


def _points(router: Any, test: Any, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean cost, mean quality, strong share) per knob value, on the test rows."""
    qh, ch = router.predict_quality(test.queries), router.predict_cost(test.queries)
    rows = router.replay(test, router.knob_grid(qh, ch, n=n))
    strong = router.models_.index(STRONG) if STRONG in router.models_ else router.strong_
    cost = np.array([float(np.mean(c)) for _, c, _, _ in rows])
    qual = np.array([float(np.mean(q)) for _, _, q, _ in rows])
    share = np.array([float(np.mean(j == strong)) for _, _, _, j in rows])
    return cost, qual, share


# ---- RouterBench ---------------------------------------------------------------------------
def bench_routerbench(minilm: bool, minilm_fast: bool = False) -> dict[str, Any]:
    from ponder.evaluation import load_dataset
    from ponder.evaluation._metrics import auc

    table = load_dataset(str(ROUTERBENCH))
    train, test = table.split(split_column="split")
    g = test.models.index(STRONG)
    acc4, cost4 = float(np.nanmean(test.scores[:, g])), float(np.nanmean(test.costs[:, g]))
    costs = np.nanmean(test.costs, axis=0)
    target = 0.95 * acc4
    res: dict[str, Any] = {"n_train": len(train.query_ids), "n_test": len(test.query_ids),
                           "gpt4_acc": acc4, "gpt4_cost": cost4, "target_acc": target, "rows": []}
    for name, make in _routers(minilm, minilm_fast=minilm_fast).items():
        t0 = time.perf_counter()
        r = make().fit(train)
        fit_s = time.perf_counter() - t0
        c, q, _ = _points(r, test)
        rel = c / cost4
        within = rel <= 0.15
        reach = q >= target - 1e-12
        row = {
            "router": name, "models": len(r.models_), "fit_s": round(fit_s, 1),
            "best_acc_at_15pct": float(q[within].max()) if within.any() else None,
            "cost_at_best_15pct": float(rel[within][np.argmax(q[within])]) if within.any() else None,
            "cheapest_rel_cost_reaching_95pct": float(rel[reach].min()) if reach.any() else None,
            "acc_at_6.8pct": float(q[rel <= 0.068].max()) if (rel <= 0.068).any() else None,
            "acc_at_64pct": float(q[rel <= 0.64].max()) if (rel <= 0.64).any() else None,
            "aiq": auc(c, q, float(costs.min()), float(costs.max())),
        }
        res["rows"].append(row)
        print(f"routerbench {name}: {row}", flush=True)
    return res


def bench_route_cascade() -> dict[str, Any]:
    """Route-then-cascade vs the plain cascade on RouterBench (the ``route-cascade`` strategy)."""
    from ponder.evaluation import load_dataset
    from ponder.routers._route_cascade import RouteCascadeStrategy

    table = load_dataset(str(ROUTERBENCH))
    train, test = table.split(split_column="split")
    g = test.models.index(STRONG)
    acc4, cost4 = float(np.nanmean(test.scores[:, g])), float(np.nanmean(test.costs[:, g]))
    t0 = time.perf_counter()
    points = RouteCascadeStrategy(n_budgets=12, n_knobs=6).fit(train).sweep(test)
    out: dict[str, Any] = {"fit_and_sweep_s": round(time.perf_counter() - t0, 1)}
    for label, routed in (("plain cascade", False), ("route-then-cascade", True)):
        rows = [(float(np.mean(p.cost)) / cost4, float(np.mean(p.quality)))
                for p in points if (p.setting["knob"] is not None) == routed]
        ok = [r for r in rows if r[0] <= 0.15]
        reach = [r[0] for r in rows if r[1] >= 0.95 * acc4 - 1e-12]
        best = max(ok, key=lambda r: r[1]) if ok else (None, None)
        out[label] = {"best_acc_at_15pct": best[1], "cost_at_best_15pct": best[0],
                      "cheapest_rel_cost_reaching_95pct": min(reach) if reach else None}
        print("route-cascade", label, out[label], flush=True)
    return out


# ---- RouteLLM GSM8K / MMLU: 5-fold CV grouped by query ----------------------------------------
def bench_routellm(minilm: bool, folds: int = 5) -> dict[str, Any]:
    from ponder.evaluation import load_dataset
    from ponder.evaluation._metrics import apgr, cpt

    out: dict[str, Any] = {}
    for ds in ("routellm-gsm8k", "routellm-mmlu"):
        table = load_dataset(ds)
        ids = np.array(table.query_ids, dtype=object)
        perm = np.random.default_rng(0).permutation(len(ids))
        parts = np.array_split(perm, folds)
        g = table.models.index(STRONG)
        w = 1 - g
        per: dict[str, list[tuple[float, float, float]]] = {}
        for k in range(folds):
            test_ids = ids[parts[k]]
            train_ids = ids[np.concatenate([parts[i] for i in range(folds) if i != k])]
            train, test = table.subset(list(train_ids)), table.subset(list(test_ids))
            sq, wq = float(np.nanmean(test.scores[:, g])), float(np.nanmean(test.scores[:, w]))
            for name, make in _routers(minilm, cost_model="mean").items():
                r = make().fit(train)
                _, q, share = _points(r, test, n=200)
                pct = share * 100
                a = apgr(pct, q, wq, sq)
                per.setdefault(name, []).append((a if a is not None else np.nan,
                                                 cpt(pct, q, wq, sq, 0.5), cpt(pct, q, wq, sq, 0.8)))
            print(f"{ds} fold {k + 1}/{folds} done", flush=True)
        out[ds] = {
            "n_queries": len(ids),
            "rows": [{"router": name, "apgr": float(np.nanmean([v[0] for v in vals])),
                      "apgr_sd": float(np.nanstd([v[0] for v in vals])),
                      "cpt50": float(np.mean([v[1] for v in vals])),
                      "cpt80": float(np.mean([v[2] for v in vals]))}
                     for name, vals in per.items()],
        }
        for row in out[ds]["rows"]:
            print(ds, row, flush=True)
    return out


# ---- latency -------------------------------------------------------------------------------------
def bench_latency(minilm: bool, n: int = 300) -> dict[str, Any]:
    from ponder.evaluation import load_dataset
    from ponder.routers import KNNRouter, MFRouter, PairwiseRouter, UtilityRouter

    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, cpus)
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    table = load_dataset(str(ROUTERBENCH))
    train, test = table.split(split_column="split")
    queries = test.queries[:n]
    rows = []
    latency_routers = {
        "pairwise-det (TF-IDF)": lambda: PairwiseRouter(),
        "utility (TF-IDF)": lambda: UtilityRouter(),
        "kNN LSA-128 (TF-IDF)": lambda: KNNRouter(),
        "kNN raw cosine (TF-IDF)": lambda: KNNRouter(n_components=None),
        "MF (TF-IDF)": lambda: MFRouter(),
    }
    if minilm:
        latency_routers |= {"utility (MiniLM)": lambda: UtilityRouter(featurizer="minilm"),
                            "kNN (MiniLM)": lambda: KNNRouter(featurizer="minilm"),
                            "utility (TF-IDF + MiniLM)": lambda: UtilityRouter(featurizer="tfidf+minilm"),
                            "utility (MiniLM fast)": lambda: UtilityRouter(featurizer="minilm-fast"),
                            "kNN (MiniLM fast)": lambda: KNNRouter(featurizer="minilm-fast")}
    small = train.subset(train.query_ids[:400]) if minilm else train  # MiniLM: fewer to embed
    for name, make in latency_routers.items():
        r = make().fit(small if "MiniLM" in name else train)
        for q in queries[:10]:  # warm-up (lazy imports, model load)
            r.route(q)
        ts = []
        for q in (queries[:100] if "MiniLM" in name else queries):
            t0 = time.perf_counter()
            r.route(q)
            ts.append(time.perf_counter() - t0)
        ms = np.array(ts) * 1e3
        row = {"router": name, "p50_ms": float(np.percentile(ms, 50)),
               "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
               "n": len(ms), "mean_query_chars": float(np.mean([len(q) for q in queries]))}
        rows.append(row)
        print("latency", row, flush=True)
    return {"rows": rows, "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None}


def _env() -> dict[str, Any]:
    import scipy
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "sklearn": sklearn.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["routerbench", "routerbench-fast", "routellm", "latency",
                                       "routecascade"],
                    action="append")
    ap.add_argument("--minilm", action="store_true")
    ap.add_argument("--json", type=Path, default=OUT / "routers.json")
    args = ap.parse_args()
    parts = args.only or ["routerbench", "routellm", "latency", "routecascade"]
    results: dict[str, Any] = {}
    if args.json.exists():
        results = json.loads(args.json.read_text())
    results["env"] = _env()
    if "routerbench" in parts:
        results["routerbench"] = bench_routerbench(args.minilm)
    if "routerbench-fast" in parts:  # the int8 / 128-token MiniLM routers next to TF-IDF
        results["routerbench_fast"] = bench_routerbench(False, minilm_fast=True)
    if "routellm" in parts:
        results["routellm"] = bench_routellm(args.minilm)
    if "latency" in parts:
        results["latency"] = bench_latency(args.minilm)
    if "routecascade" in parts:
        results["route_cascade"] = bench_route_cascade()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
