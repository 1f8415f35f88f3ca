"""Cascade targets on RouterBench (11 models) and LLMDrift PRIME (4 models), train → test.

Run:  python benchmarks/bench_cascade_targets.py [--learner logistic|hgb] [--only routerbench|prime|agree]
Needs /work/shared/data (or PONDER_DATA). Everything is chosen on the train split with
out-of-fold scores; numbers printed for "test" are held-out queries only.
Also checks the (ε, δ) guarantee empirically over many resampled calibration sets.

``--only agree``: agreement rungs on RouterBench under ``ponder eval``'s deployment protocol
(:mod:`ponder.evaluation._deploy`): the cascade (with sets of ≤ 3 among the ``--set-pool``
cheapest models) is calibrated by K-fold cross-fitting on train, each target's setting is chosen
on the pooled held-out folds with its upper confidence bound, and only then replayed on test
(the cascade fitted on every train row), with 95% bootstrap intervals over test queries. Also
the fixed rule "accept when three cheap models agree, else gpt-4" (its three models chosen on
train) for scale.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _cascade_data as data  # noqa: E402

from ponder._features import agreement_matrix  # noqa: E402
from ponder.cascade import CascadeOptimizer, certify  # noqa: E402
from ponder.evaluation import read_outcomes  # noqa: E402


def _test_scores(opt: CascadeOptimizer, test):  # type: ignore[no-untyped-def]
    test = test.select_models(opt.models_)
    order = [test.models.index(m) for m in opt.models_]
    g1, g2 = opt.scorer_.score_grid(test.queries, test.responses, test.models,
                                    agreement_matrix(test.responses))
    return test, g1[:, order], g2[:, order][:, :, order]


def _replay(opt, choice, test, s1, s2):  # type: ignore[no-untyped-def]
    cascade = opt.build(choice)
    scores = np.zeros((len(test.query_ids), len(choice.chain)))
    for k, m in enumerate(choice.chain[:-1]):
        scores[:, k] = s1[:, m] if k == 0 else s2[:, m, choice.chain[k - 1]]
    cost, qual, _ = cascade.replay(test, scores)
    return float(cost.mean()), float(qual.mean())


def run(name: str, table, ref: str, split: dict, learner: str, out: dict) -> None:  # type: ignore[no-untyped-def]
    train, test = table.split(**split)
    r_tr = train.models.index(ref)
    ref_cost_tr = float(np.nanmean(train.costs[:, r_tr]))
    ref_acc_tr = float(np.nanmean(train.scores[:, r_tr]))
    r_te = test.models.index(ref)
    ref_cost, ref_acc = float(np.nanmean(test.costs[:, r_te])), float(np.nanmean(test.scores[:, r_te]))
    print(f"\n== {name}: {len(train.query_ids)} train / {len(test.query_ids)} test queries, "
          f"{len(table.models)} models; {ref}: test acc {ref_acc:.4f}, cost ${ref_cost:.3g}/query")
    t0 = time.perf_counter()
    opt = CascadeOptimizer(folds=5, scorer_params={"learner": learner}).fit(train)
    fit_s = time.perf_counter() - t0
    tst, s1, s2 = _test_scores(opt, test)
    res: dict = {"ref": ref, "ref_test_acc": ref_acc, "ref_test_cost": ref_cost,
                 "fit_seconds": fit_s, "learner": learner, "points": []}
    print(f"fit (cross-fitted scorers + frontier): {fit_s:.1f}s")

    def report(label: str, choice) -> None:  # type: ignore[no-untyped-def]
        c, q = _replay(opt, choice, tst, s1, s2)
        chain = " > ".join(opt.models_[m] for m in choice.chain)
        th = ", ".join(f"{t:.3f}" for t in choice.thresholds)
        print(f"{label:34s} test acc {q:.4f} ({q - ref_acc:+.4f}) at {c / ref_cost:6.1%} of "
              f"{ref}'s cost | train {choice.quality:.4f} @ {choice.cost / ref_cost_tr:.1%} | "
              f"{chain} [{th}]")
        res["points"].append({"label": label, "test_acc": q, "test_cost": c,
                              "cost_ratio": c / ref_cost, "chain": chain, "thresholds": th,
                              "train_acc": choice.quality, "train_cost": choice.cost})

    for frac in (0.1, 0.2, 0.3, 0.5, 1.0):
        report(f"budget {frac:.0%} of ref cost", opt.choose(budget=frac * ref_cost_tr))
    for extra in (0.0, 0.01, 0.02):
        try:
            report(f"target = ref train acc {extra:+.2f}", opt.choose(target=ref_acc_tr + extra))
        except Exception as exc:  # noqa: BLE001 - report and continue
            print(f"target {extra:+.2f}: {exc}")
    # Oracle-free reference: best test point on the train frontier's Pareto set (for context only).
    out[name] = res


def guarantee(table, split: dict, ref: str, learner: str, eps: float, delta: float,  # type: ignore[no-untyped-def]
              trials: int, n_cal: int, out: dict) -> None:
    """Resample calibration sets from the test population; count how often the certified cascade's
    true (population) drop vs the last rung exceeds ε. Must be ≤ δ (up to Monte-Carlo error)."""
    train, test = table.split(**split)
    opt = CascadeOptimizer(folds=5, scorer_params={"learner": learner}).fit(train)
    r = train.models.index(ref)
    base = opt.build(opt.choose(budget=0.2 * float(np.nanmean(train.costs[:, r]))))
    pop = test.select_models([rg.model for rg in base.rungs])
    scores = base.rung_scores(pop)
    last = pop.models.index(base.rungs[-1].model)
    y_last = pop.scores[:, last]
    rng = np.random.default_rng(0)
    ids = np.array(pop.query_ids, dtype=object)
    by_id = pop.df.groupby("query_id").indices
    viol, drops, costs = 0, [], []
    t0 = time.perf_counter()
    for _ in range(trials):
        pick = rng.integers(0, len(ids), n_cal)  # i.i.d. draws (with replacement) from the population
        # A query drawn twice appears twice, under distinct ids (one per draw).
        rows = np.concatenate([by_id[ids[k]] for k in pick])
        draw = np.concatenate([np.full(len(by_id[ids[k]]), j) for j, k in enumerate(pick)])
        df = pop.df.iloc[rows].reset_index(drop=True)
        df["query_id"] = df["query_id"] + "#" + pd.Series(draw).astype(str)
        cal = read_outcomes(df)
        chosen, cert = certify(base, cal, epsilon=eps, delta=delta)
        # Population risk of the chosen thresholds (scores don't depend on thresholds).
        _, qual, _ = chosen.replay(pop, scores)
        drop = float(np.mean(y_last - qual))
        cost, _, _ = chosen.replay(pop, scores)
        drops.append(drop)
        costs.append(float(cost.mean()))
        viol += drop > eps
    print(f"\n== guarantee ε={eps}, δ={delta}: {trials} calibration draws of n={n_cal}: "
          f"violation rate {viol / trials:.3f} (must be ≤ {delta}); mean population drop "
          f"{np.mean(drops):+.4f}, mean cost ${np.mean(costs):.3g} vs last rung "
          f"${np.nanmean(pop.costs[:, last]):.3g} ({time.perf_counter() - t0:.1f}s)")
    out["guarantee"] = {"epsilon": eps, "delta": delta, "trials": trials, "n_cal": n_cal,
                        "violation_rate": viol / trials, "mean_drop": float(np.mean(drops)),
                        "mean_cost": float(np.mean(costs)), "chain": repr(base)}


def fixed_rule(table, ref: str, pool: int) -> dict:  # type: ignore[no-untyped-def]
    """'Call three cheap models; accept when all three agree, else ``ref``': the triple with the
    best train accuracy among the ``pool`` cheapest, then measured on test (Cascade.replay)."""
    import itertools

    from ponder.cascade import AgreementSet, Cascade, Rung

    train, test = table.split()
    cheap = [m for m in np.argsort(np.nanmean(train.costs, axis=0)) if train.models[m] != ref][:pool]
    best = None
    for combo in itertools.combinations(cheap, 3):
        members = tuple(train.models[m] for m in combo)
        c = Cascade([Rung("set", 1.0, agree=AgreementSet(members, stop_early=False)), Rung(ref)])
        cost, qual, _ = c.replay(train)
        if best is None or qual.mean() > best[0]:
            best = (float(qual.mean()), c, members)
    assert best is not None
    cost, qual, _ = best[1].replay(test)
    r = test.models.index(ref)
    out = {"members": list(best[2]), "test_quality": float(qual.mean()),
           "test_cost_ratio": float(cost.mean() / np.nanmean(test.costs[:, r])),
           "train_quality": best[0]}
    print(f"fixed rule (3 agree, else {ref}), members chosen on train {best[2]}: test acc "
          f"{out['test_quality']:.4f} at {out['test_cost_ratio']:.1%} of {ref}'s cost")
    return out


def agree(table, ref: str, set_pool: int, n_budgets: int, n_pareto: int, learner: str,  # type: ignore[no-untyped-def]
          variants: list[str], out: dict, text_method: str = "tokens") -> None:
    """Agreement rungs on RouterBench, certified operating points (``ponder eval``'s) on test."""
    from ponder.cascade import CascadeStrategy
    from ponder.evaluation import evaluate
    from ponder.routers._strategies import RouteCascadeStrategy

    res: dict = {"set_pool": set_pool, "n_budgets": n_budgets, "n_pareto": n_pareto,
                 "learner": learner}
    res["fixed_rule"] = fixed_rule(table, ref, set_pool)
    configs = {"models": ("cascade (models only)", {"set_pool": 0}),
               "sets": ("cascade + agreement sets", {"set_pool": set_pool}),
               "gain": ("cascade + agreement sets scored by gain over gpt-4",
                        {"set_pool": set_pool, "set_relative": True})}
    for _, kw in configs.values():
        if kw["set_pool"]:
            kw["set_text_method"] = text_method
    res["text_method"] = text_method
    for v in variants:
        label, kw = configs[v.removesuffix("+route")]
        strategies = [CascadeStrategy(label, n_budgets=n_budgets, n_pareto=n_pareto, folds=5,
                                      scorer_params={"learner": learner}, **kw)]
        if v.endswith("+route"):
            rkw = {k: kw[k] for k in ("set_pool",)}
            strategies.append(RouteCascadeStrategy(label + ", route-then-cascade",
                                                   n_budgets=n_budgets, n_knobs=4,
                                                   n_pareto=n_pareto, folds=5,
                                                   scorer_params={"learner": learner}, **rkw))
        t0 = time.perf_counter()
        d = evaluate(table, strategies=strategies, n_bootstrap=1000).to_json()
        secs = time.perf_counter() - t0
        assert d["deployment"]["best_model"]["model"] == ref, d["deployment"]["best_model"]
        for s in strategies:
            _deployed(s.name, d, secs, ref, res)
    out["agree"] = res


def _deployed(label: str, d: dict, secs: float, ref: str, res: dict) -> None:
    s = next(x for x in d["strategies"] if x["name"] == label)
    dep = d["deployment"]
    print(f"\n== {label}: {dep['folds']}-fold calibration on {dep['n_calibration_queries']} "
          f"train queries, {len(s['curve'])} settings swept ({secs:.0f}s for the run); {ref}: "
          f"test acc {dep['best_model']['test']['quality']:.4f}")
    for e in s["deployed"]:
        if e["target"] not in ("best_quality", "budget:0.5", "budget:1.0"):
            continue
        if not e["met"]:
            print(f"{e['target']:13s} not met on train: {e['note']}")
            continue
        t, ci = e["test"], e["test"].get("ci95", {})
        print(f"{e['target']:13s} {'certified' if e['certified'] else 'uncertified'} "
              f"(bound {e['bound']:.4f}) test acc {t['quality']:.4f} {_ci(ci.get('quality'))} "
              f"({t['quality_vs_best']:+.4f} vs {ref} {_ci(ci.get('quality_vs_best'), '{:+.4f}')}) at "
              f"{t['cost_ratio']:.1%} {_ci(ci.get('cost_ratio'), '{:.1%}')} of its cost | "
              f"cal {e['calibration']['quality']:.4f} | {' > '.join(e['setting']['chain'])} "
              f"{e['setting']['thresholds']} knob={e['setting'].get('knob', '-')}")
    res[label] = {"seconds": secs, "deployed": s["deployed"],
                  "ship": [e for e in d["ship"] if e["strategy"] == label]}


def _ci(ci, fmt: str = "{:.4f}") -> str:  # type: ignore[no-untyped-def]
    if not ci or ci[0] is None:
        return ""
    return "[" + fmt.format(ci[0]) + ", " + fmt.format(ci[1]) + "]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--learner", default="logistic")
    ap.add_argument("--only", default=None)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--json", default=None)
    ap.add_argument("--epsilon", type=float, default=0.02)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--n-cal", type=int, default=400)
    ap.add_argument("--set-pool", type=int, default=6)
    ap.add_argument("--n-budgets", type=int, default=32)
    ap.add_argument("--n-pareto", type=int, default=40)
    ap.add_argument("--set-text-method", default="tokens", choices=("tokens", "embed"))
    ap.add_argument("--variants", default="models,sets,gain+route",
                    help="agree: which cascades (models, sets, gain; +route adds route-then-cascade)")
    a = ap.parse_args()
    out: dict = {}
    if a.only == "agree":
        agree(data.routerbench(), "gpt-4-1106-preview", a.set_pool, a.n_budgets, a.n_pareto,
              a.learner, a.variants.split(","), out, a.set_text_method)
    if a.only in (None, "routerbench"):
        run("routerbench", data.routerbench(), "gpt-4-1106-preview", {}, a.learner, out)
    if a.only in (None, "prime"):
        run("prime", data.prime(), "gpt-4-0314",
            {"test_fraction": 0.5, "seed": 0, "split_column": None}, a.learner, out)
    if a.only in (None, "guarantee"):
        guarantee(data.routerbench(), {}, "gpt-4-1106-preview", a.learner, a.epsilon, a.delta,
                  a.trials, a.n_cal, out)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
