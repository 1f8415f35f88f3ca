"""Router benchmarks: deployed operating points on RouterBench, RouteLLM-style curve metrics on
RouteLLM's GSM8K and MMLU outcomes (5-fold CV grouped by query), and decision latency per query.

RouterBench numbers are the deployed points of ``ponder.evaluation.evaluate``: each router is
fitted on train, its knob is chosen for each target (best_quality, budget:0.1 … budget:1.0) on a
calibration part of train, and that one setting is measured on test, with bootstrap intervals
and test spend against the budget. No number here is read off a test-swept curve.

    python benchmarks/bench_routers.py                  # everything, writes benchmarks/results/routers.json
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
    """(mean cost, mean quality, strong share) per knob value, on the test rows: a whole curve,
    for RouteLLM's curve summaries (APGR, CPT) only, never an operating point."""
    qh, ch = router.predict_quality(test.queries), router.predict_cost(test.queries)
    rows = router.replay(test, router.knob_grid(qh, ch, n=n))
    strong = router.models_.index(STRONG) if STRONG in router.models_ else router.strong_
    cost = np.array([float(np.mean(c)) for _, c, _, _ in rows])
    qual = np.array([float(np.mean(q)) for _, _, q, _ in rows])
    share = np.array([float(np.mean(j == strong)) for _, _, _, j in rows])
    return cost, qual, share


# ---- RouterBench: deployed points (knob chosen on train, measured on test) ---------------------------
def _deployed_rows(result: Any, name: str, target_acc: float) -> list[dict[str, Any]]:
    """One row per target from ``ponder.evaluation.evaluate``'s deployed points: the setting was
    chosen by K-fold calibration on train (with its upper confidence bound), then replayed on test
    by the router fitted on every train row. Test spend is reported against the budget, with its
    bootstrap interval."""
    d = result.to_json()
    s = next(s for s in d["strategies"] if s["name"] == name)
    out = []
    for x in s["deployed"]:
        row: dict[str, Any] = {"target": x["target"], "met_on_train": x["met"]}
        if x["met"]:
            t = x["test"]
            ci = t.get("ci95") or {}
            row |= {"setting": x["setting"], "certified": x["certified"], "bound": x["bound"],
                    "calibration_quality": x["calibration"]["quality"],
                    "calibration_cost": x["calibration"]["cost_usd"], "test_quality": t["quality"],
                    "test_quality_ci95": ci.get("quality"), "test_cost_ratio": t["cost_ratio"],
                    "test_cost_ratio_ci95": ci.get("cost_ratio"),
                    "test_budget_ratio": x.get("test_budget_ratio"),
                    "test_budget_ratio_ci95": x.get("test_budget_ratio_ci95"),
                    "saving_in_doubt": x.get("saving_in_doubt"),
                    "reaches_target_acc": t["quality"] >= target_acc - 1e-12}
        out.append(row)
    return out


def _evaluate_one(table: Any, strategy: Any, source: str, target_acc: float) -> dict[str, Any]:
    from ponder.evaluation import evaluate

    t0 = time.perf_counter()
    res = evaluate(table, strategies=[strategy], split_column="split", seed=0, n_bootstrap=200,
                   source=source)
    secs = time.perf_counter() - t0
    d = res.to_json()
    if not any(s["name"] == strategy.name for s in d["strategies"]):
        raise RuntimeError(f"{strategy.name} was skipped: {d['skipped']}")
    return {"router": strategy.name, "eval_s": round(secs, 1),
            "reference": d["deployment"]["best_model"],
            "deployed": _deployed_rows(res, strategy.name, target_acc)}


def bench_routerbench(minilm: bool, minilm_fast: bool = False) -> dict[str, Any]:
    """Every router through ``ponder.evaluation.evaluate``: fitted on train, knob chosen per
    target by K-fold calibration on train, reported on test (RouterDC's split)."""
    from ponder.evaluation import load_dataset
    from ponder.routers._strategies import RouterStrategy

    table = load_dataset(str(ROUTERBENCH))
    train, test = table.split(split_column="split")
    g = test.models.index(STRONG)
    acc4, cost4 = float(np.nanmean(test.scores[:, g])), float(np.nanmean(test.costs[:, g]))
    target = 0.95 * acc4
    res: dict[str, Any] = {"protocol": "deployed points: knob chosen by K-fold calibration on "
                                       "train (certified where its bound meets the target), "
                                       "router fitted on every train row, measured on test",
                           "n_train": len(train.query_ids),
                           "n_test": len(test.query_ids), "gpt4_acc": acc4, "gpt4_cost": cost4,
                           "target_acc": target, "rows": []}
    for name, make in _routers(minilm, minilm_fast=minilm_fast).items():
        row = _evaluate_one(table, RouterStrategy(name, make, n_points=200), str(ROUTERBENCH),
                            target)
        res["rows"].append(row)
        for x in row["deployed"]:
            print(f"routerbench {name} {x['target']}: "
                  + (f"test acc {x['test_quality']:.4f} at {x['test_cost_ratio']:.1%} of gpt-4's "
                     f"cost, spend/budget {x['test_budget_ratio'] or float('nan'):.2f}"
                     if x["met_on_train"] else "not met on train"), flush=True)
    return res


def bench_route_cascade() -> dict[str, Any]:
    """Route-then-cascade on RouterBench (the ``route-cascade`` strategy), deployed points; its
    λ = ∞ settings are the plain cascade, so train may choose either."""
    from ponder.evaluation import load_dataset
    from ponder.routers._strategies import RouteCascadeStrategy

    table = load_dataset(str(ROUTERBENCH))
    _, test = table.split(split_column="split")
    g = test.models.index(STRONG)
    acc4 = float(np.nanmean(test.scores[:, g]))
    row = _evaluate_one(table, RouteCascadeStrategy(n_budgets=12, n_knobs=6), str(ROUTERBENCH),
                        0.95 * acc4)
    for x in row["deployed"]:
        print("route-cascade", x, flush=True)
    return row


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
