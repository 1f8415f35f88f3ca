"""What self-consistency and logprobs add to the scorer and the cascade, on a table you collected.

    python benchmarks/bench_signals.py collect --workdir DIR [--prompts 50 --samples 3 --max-tokens 48]
    python benchmarks/bench_signals.py measure TABLE [--seeds 5]

``collect`` runs the real loop on two local models behind llama.cpp (SmolLM2-135M-Instruct and
Gemma-3-270M, as in bench_collect_loop.py): ``ponder collect --samples K --logprobs`` then
``ponder grade`` (reference graders), leaving ``DIR/graded.parquet``.

``measure`` splits the graded table into train/test by query (seeded), and for each seed compares
the scorer and the cascade trained *with* the signals (agreement among the samples, logprob
statistics) against the same ones trained *without* them (the table's ``samples`` and logprob
columns dropped). Everything is chosen on train (cross-fitted scores for the cascade's chain and
thresholds; the operating point for a target quality on train) and reported on test.
"""

from __future__ import annotations

import argparse
import json
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
        for model, out in (("smol:smollm2", "smol.parquet"), ("gemma:gemma3", "gemma.parquet")):
            args = ["collect", str(prompts), "-m", model, "-o", out, "--samples", str(a.samples),
                    "--temperature", "0.7", "--logprobs", "--max-tokens", str(a.max_tokens), "-n", "1",
                    "--no-progress", "-c", str(cfg)]
            runs[model] = (args, time.perf_counter(), subprocess.Popen(
                PONDER + args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for _model, (args, t, proc) in runs.items():
            text, _ = proc.communicate()
            print(f"[{time.perf_counter() - t:7.1f}s] ponder {' '.join(args)} (rc={proc.returncode})\n"
                  f"{text[-1500:]}", flush=True)
            if proc.returncode != 0:
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


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--workdir", type=Path, default=Path("/tmp/ponder-signals"))
    c.add_argument("--prompts", type=int, default=50)
    c.add_argument("--samples", type=int, default=3)
    c.add_argument("--max-tokens", type=int, default=16)
    a = ap.parse_args()
    if a.cmd == "collect":
        collect(a)


if __name__ == "__main__":
    main()
