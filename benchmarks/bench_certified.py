"""Do certified picks keep their promise? ``ponder eval``'s ship picks over random train/test splits.

    python benchmarks/bench_certified.py [--splits 20] [--datasets prime,gsm8k,mmlu,routerbench]
                                         [--strategies routers|default] [--json out.json]

For each dataset and each seeded split (half the queries held out), ``evaluate`` picks what to
ship on train rows only (K-fold calibration, union-bound WSR bounds at ε = 1 pt, δ = 0.1); the
test rows then say whether a certified pick kept its promise:

- ``best_quality``: a certified pick *fails* when its test quality is more than ε below the best
  single model's (chosen on train) on the same test queries;
- ``budget:f``: a certified pick *fails* when its test spend exceeds f × the best model's.

The guarantee says each rate is at most δ (over splits; the test half is finite, so a rate
slightly above δ can be test noise). Reported with the share of splits where something was
certified and the average test saving (cost ratio) of the certified picks. ``--strategies
routers`` (default) runs the six registered routers, which fit in seconds; ``default`` adds the
cascades (about 10× slower). RouterBench needs /work/shared/data (or PONDER_DATA).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROUTERS = ["router-pairwise-det", "router-pairwise-prob", "router-pairwise-trans",
           "router-utility", "router-knn", "router-mf"]


def _table(name: str):  # type: ignore[no-untyped-def]
    from ponder.evaluation import load_dataset

    if name == "routerbench":
        import _cascade_data as data

        return data.routerbench()
    return load_dataset({"prime": "llmdrift-prime", "gsm8k": "routellm-gsm8k",
                         "mmlu": "routellm-mmlu"}[name])


def run(name: str, splits: int, strategies: list[str] | None, epsilon: float,
        delta: float, picks_file: str | None = None, first: int = 0) -> dict:
    from ponder.evaluation import evaluate

    table = _table(name)
    picks: list[dict] = []
    t0 = time.perf_counter()
    for seed in range(first, first + splits):
        d = evaluate(table, strategies=strategies, split_column=None, test_fraction=0.5,
                     seed=seed, n_bootstrap=0, epsilon=epsilon, delta=delta).to_json()
        best = d["deployment"]["best_model"]["model"]
        for e in d["ship"]:
            t = e["test"]
            picks.append({
                "split": seed, "target": e["target"], "strategy": e["strategy"],
                "certified": bool(e["certified"]),
                "trivial": e["strategy"] == f"model:{best}",  # the best model: exact, no bound
                "bound": e["bound"], "test_cost_ratio": t["cost_ratio"],
                "test_quality_vs_best": t["quality_vs_best"],
                "failed": bool(e["certified"]) and (
                    t["quality_vs_best"] < -epsilon - 1e-12 if e["target"] == "best_quality"
                    else bool(e.get("over_budget"))),
                "n_needed": ((e.get("needed") or [{}])[0]).get("n_needed")})
        if picks_file:  # every split's picks as they come, so a cut-off run still counts
            with open(picks_file, "a") as f:
                f.writelines(json.dumps({"dataset": name, **p}) + "\n"
                             for p in picks if p["split"] == seed)
        print(f"{name} split {seed}: " + ", ".join(
            f"{e['target']} {e['strategy']}{'' if e['certified'] else ' (not certified)'}"
            for e in d["ship"]), flush=True)
    out = {"n_queries": len(table.query_ids), "n_models": len(table.models), "splits": splits,
           "seconds": round(time.perf_counter() - t0, 1), "targets": {}, "picks": picks}
    for target in dict.fromkeys(p["target"] for p in picks):
        mine = [p for p in picks if p["target"] == target]
        real = [p for p in mine if p["certified"] and not p["trivial"]]
        out["targets"][target] = {
            "certified": sum(p["certified"] for p in mine),
            "certified_not_the_best_model": len(real),
            "failures": sum(p["failed"] for p in mine),
            "failure_rate": (sum(p["failed"] for p in real) / len(real) if real else None),
            "mean_test_cost_ratio": (float(np.mean([p["test_cost_ratio"] for p in real]))
                                     if real else None),
            "median_n_needed": (float(np.median([p["n_needed"] for p in mine
                                                 if p["n_needed"] is not None]))
                                if any(p["n_needed"] is not None for p in mine) else None)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--datasets", default="prime,gsm8k,mmlu,routerbench")
    ap.add_argument("--strategies", default="routers", choices=("routers", "default"))
    ap.add_argument("--epsilon", type=float, default=0.01)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--picks", default=None, help="append each split's picks here (JSON lines)")
    ap.add_argument("--first-split", type=int, default=0, help="seed of the first split")
    a = ap.parse_args()
    res: dict = {"python": platform.python_version(), "epsilon": a.epsilon, "delta": a.delta,
                 "strategies": a.strategies, "datasets": {}}
    for name in a.datasets.split(","):
        res["datasets"][name] = run(name, a.splits, ROUTERS if a.strategies == "routers" else None,
                                    a.epsilon, a.delta, a.picks, a.first_split)
        print(json.dumps(res["datasets"][name]["targets"], indent=1), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
