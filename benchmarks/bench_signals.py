"""What self-consistency and logprobs add to the scorer and the cascade, on a table you collected.

    python benchmarks/bench_signals.py collect --workdir DIR [--prompts 50 --samples 3
        --max-tokens 16 --minutes M]
    python benchmarks/bench_signals.py measure DIR/graded.parquet [--seeds 10 --folds 4]

``collect`` runs the real loop on two local models behind llama.cpp (SmolLM2-135M-Instruct and
Gemma-3-270M, servers and prices as in bench_collect_loop.py): one ``ponder collect --logprobs``
per model side by side (``--samples 3`` for SmolLM2, the scored first rung; 1 for Gemma, the last
rung, which is not scored), then ``ponder grade`` (reference graders), leaving
``DIR/graded.parquet``. ``--minutes`` interrupts the collects (they keep every answer and resume
on the next run).

``measure`` compares the scorer and the cascade trained *with* the signals (agreement among the
samples, logprob statistics) against the same ones *without* them (the ``samples`` and logprob
columns dropped, and the first rung charged one answer instead of three). AUC is cross-fitted
over all queries and, with the cascade, measured on seeded 50/50 splits by query: the chain and
thresholds are chosen on train (cross-fitted scores, the best single model's train quality as
the target) and replayed on test.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
PONDER = [sys.executable, "-m", "ponder"]


def collect(a: argparse.Namespace) -> None:
    from bench_collect_loop import PROMPTS, _ggufs, start_llama, write_config

    work = a.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    prompts = work / "prompts.jsonl"
    # the multiple-choice questions first: their answers fit a short token cap (GSM8K's rarely do)
    rows = PROMPTS.read_text("utf-8").splitlines(keepends=True)
    rows = sorted(rows, key=lambda r: json.loads(r).get("task") != "mmlu")[: a.prompts]
    prompts.write_text("".join(rows))
    ggufs = _ggufs(work)
    procs = []
    try:
        p1, u1, _ = start_llama(work, "smollm2", ggufs["smollm2"], "chatml")
        procs.append(p1)
        p2, u2, _ = start_llama(work, "gemma3", ggufs["gemma3"], "gemma")
        procs.append(p2)
        cfg = write_config(work, {"smol": u1, "gemma": u2})
        # one collect per model, side by side: each model has its own single-threaded server, and
        # one collect over both would queue every call of the first model before the second's
        runs = {}
        for model, out, k in (("smol:smollm2", "smol.parquet", a.samples),
                              ("gemma:gemma3", "gemma.parquet", a.last_samples)):
            args = ["collect", str(prompts), "-m", model, "-o", out, "--samples", str(k),
                    "--temperature", "0.7", "--logprobs", "--max-tokens", str(a.max_tokens), "-n", "1",
                    "--no-progress", "-c", str(cfg)]
            runs[model] = (args, time.perf_counter(), subprocess.Popen(
                PONDER + args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + 60 * a.minutes if a.minutes else None
        while any(p.poll() is None for _, _, p in runs.values()):
            if deadline is not None and time.monotonic() > deadline:
                for _, _, p in runs.values():
                    if p.poll() is None:
                        p.send_signal(signal.SIGINT)  # collect keeps every answer received
                deadline = None
            time.sleep(2)
        for _model, (args, t, proc) in runs.items():
            text, _ = proc.communicate()
            print(f"[{time.perf_counter() - t:7.1f}s] ponder {' '.join(args)} (rc={proc.returncode})\n"
                  f"{text[-1500:]}", flush=True)
            if proc.returncode not in (0, 130):
                raise SystemExit("collect failed")
        import pandas as pd

        pd.concat([pd.read_parquet(work / "smol.parquet"), pd.read_parquet(work / "gemma.parquet")],
                  ignore_index=True).to_parquet(work / "outcomes.parquet", index=False)
        args = ["grade", "outcomes.parquet", "-o", "graded.parquet", "--json", "-c", str(cfg)]
        t = time.perf_counter()
        r = subprocess.run(PONDER + args, capture_output=True, text=True, cwd=work)
        print(f"[{time.perf_counter() - t:7.1f}s] ponder {' '.join(args)} (rc={r.returncode})\n"
              f"{r.stdout[-2000:]}{r.stderr[-2000:]}", flush=True)
        if r.returncode != 0:
            raise SystemExit("grade failed")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


# ---- measure ------------------------------------------------------------------------------------
VARIANTS = {
    "none": "1 sample, no logprobs (the cascade without signals)",
    "logprobs": "1 sample + logprob_mean/min (logprobs cost nothing extra)",
    "all": "3 samples (self-consistency) + logprobs; the rung pays for every sample",
}


def single_answer_cost(df, prices: dict[str, tuple[float, float]]):
    """What one answer (the first sample) cost: the input of one call, the response's own tokens
    (``logprob_tokens``). llama.cpp answers one sample per call, so this is exact there."""
    import numpy as np

    from ponder.scorers._signals import parse_samples

    n = df["samples"].map(lambda v: len(parse_samples(v))).clip(lower=1)
    p_in = df["model"].map(lambda m: prices[m][0]) / 1e6
    p_out = df["model"].map(lambda m: prices[m][1]) / 1e6
    out = (df["input_tokens"] / n) * p_in + df["logprob_tokens"] * p_out
    return np.where(n > 1, out, df["cost_usd"])


def variant_table(table, variant: str, single):
    from ponder.evaluation import OutcomeTable

    df = table.df.copy()
    if variant == "all":
        return table
    df["cost_usd"] = single
    df = df.drop(columns=["samples"])
    if variant == "none":
        df = df.drop(columns=["logprob_mean", "logprob_min"])
    return OutcomeTable.read(df, name=f"{table.name}:{variant}")


def _auc(y, p) -> float:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y) >= 0.5
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def measure(a: argparse.Namespace) -> None:
    import numpy as np
    from bench_collect_loop import PRICES

    from ponder._exceptions import PonderError
    from ponder.cascade import Cascade, CascadeOptimizer, Rung, crossfit_scores, fit_scorer
    from ponder.evaluation import OutcomeTable
    from ponder.scorers import table_signals

    t0 = time.perf_counter()
    raw = OutcomeTable.read(a.table)
    df = raw.df
    small, big = a.small, a.big
    # queries where the scored model has every sample and the last model answered
    from ponder.scorers._signals import parse_samples

    n_samples = df.samples.map(lambda v: len(parse_samples(v)))
    ok_small = df[(df.model == small) & (n_samples >= a.samples)].query_id
    ok_big = df[df.model == big].query_id
    keep = sorted(set(ok_small) & set(ok_big))
    table = raw.select_models([small, big]).subset(keep)
    single = single_answer_cost(table.df, PRICES)
    lone = table.df.samples.map(lambda v: len(parse_samples(v))) == 1
    assert np.allclose(single[lone], table.df.cost_usd[lone])  # the formula is exact for one sample
    m_s = table.models.index(small)
    y_all = table.scores[:, m_s]
    S = table_signals(table)[:, m_s]
    print(f"table {a.table}: {len(keep)} queries with {a.samples} samples of {small} and an answer of "
          f"{big}; {small} right on {y_all.mean():.3f}, {big} on "
          f"{np.nanmean(table.scores[:, table.models.index(big)]):.3f}")
    print("raw signals of the scored model vs its correctness, all queries (no training): AUC "
          + ", ".join(f"{n}={_auc(y_all[np.isfinite(S[:, j])], S[np.isfinite(S[:, j]), j]):.3f}"
                      for j, n in enumerate(("sc_agree", "sc_pairwise", "logprob_mean", "logprob_min"))))
    tables = {v: variant_table(table, v, single) for v in VARIANTS}
    # cross-fitted: every query scored by a scorer fitted on the other folds (no test labels used)
    print(f"cross-fitted AUC of the scorer on {small}'s answers, {a.folds} folds by query, "
          f"{a.seeds} fold seeds:")
    for v, t in tables.items():
        aucs = []
        for seed in range(a.seeds):
            try:
                s1, _ = crossfit_scores(t, {"signals": v != "none"}, folds=a.folds, seed=seed)
            except PonderError:
                continue
            aucs.append(_auc(t.scores[:, t.models.index(small)], s1[:, t.models.index(small)]))
        aucs_ = np.array([x for x in aucs if np.isfinite(x)])
        print(f"  {v:9s} {aucs_.mean():.3f} ± {aucs_.std():.3f} (n={len(aucs_)})" if len(aucs_)
              else f"  {v:9s} n/a")
    rows: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for seed in range(a.seeds):
        for v, t in tables.items():
            train, test = t.split(test_fraction=0.5, seed=seed)
            ms = test.models.index(small)
            rec: dict[str, float] = {}
            try:
                scorer = fit_scorer(train, {"signals": v != "none"}, seed=seed)
                p = Cascade([Rung(small, 0.5, scorer), Rung(big)]).rung_scores(test)[:, 0]
                rec["auc"] = _auc(test.scores[:, ms], p)
            except PonderError:
                rec["auc"] = float("nan")
            # the cascade: chain and thresholds chosen on train (cross-fitted scores) for the
            # quality of the best single model on train; replayed on test
            target = float(max(np.nanmean(train.scores[:, j]) for j in range(len(train.models))))
            try:
                opt = CascadeOptimizer(folds=3, max_length=2, scorer_params={"signals": v != "none"},
                                       seed=seed).fit(train)
                try:
                    choice = opt.choose(target=target)
                except PonderError:
                    choice = opt.frontier_.cheapest_for_quality(float(opt.frontier_.quality.max()))
                casc = opt.build(choice)
                cost, qual, _ = casc.replay(test)
                ref = int(np.argmax([np.nanmean(train.scores[:, j]) for j in range(len(train.models))]))
                ref_cost = float(np.nanmean(test.costs[:, ref]))
                rec.update(cost=float(cost.mean()), quality=float(qual.mean()),
                           ref_quality=float(np.nanmean(test.scores[:, ref])),
                           saving=1 - float(cost.mean()) / ref_cost,
                           chain_len=len(choice.chain))
            except PonderError as exc:
                print(f"seed {seed} {v}: no cascade ({exc})")
            rows[v].append(rec)
    print(f"\n{a.seeds} seeded 50/50 splits by query; mean ± sd over seeds (n/a: a test half "
          "with one class)")
    print("| signals | scorer AUC on test | cascade quality on test | best-model quality | "
          "cost saving vs best model | 2-rung chains |\n|---|---|---|---|---|---|")
    for v, recs in rows.items():
        def ms_(key: str, recs: list[dict[str, float]] = recs) -> str:
            vals = np.array([r.get(key, np.nan) for r in recs], dtype=float)
            vals = vals[np.isfinite(vals)]
            return f"{vals.mean():.3f} ± {vals.std():.3f} (n={len(vals)})" if len(vals) else "n/a"
        two = sum(1 for r in recs if r.get("chain_len") == 2)
        print(f"| {v}: {VARIANTS[v]} | {ms_('auc')} | {ms_('quality')} | {ms_('ref_quality')} | "
              f"{ms_('saving')} | {two}/{len(recs)} |")
    print(f"\nmeasure wall time {time.perf_counter() - t0:.1f}s")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--workdir", type=Path, default=Path("/tmp/ponder-signals"))
    c.add_argument("--prompts", type=int, default=50)
    c.add_argument("--samples", type=int, default=3)
    c.add_argument("--max-tokens", type=int, default=16)
    c.add_argument("--last-samples", type=int, default=1,
                   help="samples of the last rung's model (Gemma): it answers, it is not scored")
    c.add_argument("--minutes", type=float, default=0,
                   help="interrupt the collects after this long (0: run to the end); resumable")
    m = sub.add_parser("measure")
    m.add_argument("table", type=Path, help="a graded table (collect, then grade)")
    m.add_argument("--small", default="smol:smollm2", help="the scored first rung's model")
    m.add_argument("--big", default="gemma:gemma3", help="the last rung's model")
    m.add_argument("--samples", type=int, default=3)
    m.add_argument("--seeds", type=int, default=10)
    m.add_argument("--folds", type=int, default=4)
    a = ap.parse_args()
    if a.cmd == "collect":
        collect(a)
    else:
        measure(a)


if __name__ == "__main__":
    main()
