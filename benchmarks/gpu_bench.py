"""One-call GPU benchmark of ponder's speculative engine and its Triton kernels.

    PYTHONPATH=. python benchmarks/gpu_bench.py --out $OUT          # the full run (H100: < 8 min)
    PYTHONPATH=. python benchmarks/gpu_bench.py --smoke             # imports + kernel checks only
    PYTHONPATH=. python benchmarks/gpu_bench.py --device cpu --tiny # the logic, on a laptop

Sections (each fails soft: a broken one prints "not run: <reason>" and the rest still runs; every
row prints as a Markdown table row as soon as it is measured, every target as a PASS/FAIL row of
"checks"):
  1. copy bandwidth (large device-to-device copy, bytes read + written) and launch overhead;
  2. kernel correctness on the device (exact vs the torch references, same noise);
  3. per-kernel times: Triton vs torch eager vs torch.compile, batch 1/8, vocab 49k/128k/152k;
  4. end to end, batch 1, bf16 random weights generated on the device, at the SmolLM2-135M,
     SmolLM2-1.7B and Llama-3.1-8B shapes. Every tok/s number comes from the product's public
     API, ``Engine.generate_ids`` (``loop="device"``: device-resident positions, each step a
     CUDA graph captured when the engine is built, its time in ``engine_capture_s``), timed on
     its second call (the first compiles what prefill needs; no graph is captured in either):
     target-only greedy and sampled, speculative greedy and sampled (layer-cut draft
     ``layers:N`` sharing the target's cache, k fixed), and the eager host loop
     (``loop="host"``) for comparison. Decode tok/s = (new tokens - 1) / stats.decode_s (the
     first token comes from prefill); wall tok/s = new tokens / wall clock of the call.
     Also: achieved GB/s of target-only greedy (weights + KV bytes per token); the Leviathan
     check (the k drafts and the verify pass of the speculative engine's own device loop, each
     timed alone in a CUDA graph: the same forward, fused kernels, caches and sampling mode as
     the timed run; predicted tok/s = tokens per step / (k drafts + verify)); sampled vs greedy
     speculation per target step; greedy identity (speculative greedy tokens == target-only
     greedy tokens); at the 8B shape a 16k-token prompt's prefill memory;
  5. Hugging Face transformers on the same weights: generate (eager, static cache) and assisted
     generation with the same layer-cut draft, tokens/s and whether greedy tokens match.

Random weights: the layers after the draft's cut get their residual-branch output projections
scaled by --residual-scale, so that the layer-cut draft agrees with the target often enough to
exercise speculation (random weights have no natural draft). Acceptance is reported as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

SHAPES: dict[str, dict[str, Any]] = {
    "SmolLM2-135M": dict(
        vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, intermediate_size=1536,
        rope_theta=100000.0, tie_embeddings=True, norm_eps=1e-5,
    ),
    "SmolLM2-1.7B": dict(
        vocab_size=49152, dim=2048, n_layers=24, n_heads=32, n_kv_heads=32, intermediate_size=8192,
        rope_theta=130000.0, tie_embeddings=True, norm_eps=1e-5,
    ),
    "Llama-3.1-8B": dict(
        vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, intermediate_size=14336,
        rope_theta=500000.0, norm_eps=1e-5, max_position=131072,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    ),
}  # fmt: skip
TINY = dict(
    vocab_size=512, dim=64, n_layers=4, n_heads=4, n_kv_heads=2, intermediate_size=128,
    rope_theta=10000.0, tie_embeddings=True, norm_eps=1e-5,
)  # fmt: skip

ROWS: list[dict[str, Any]] = []  # every measured row, also written to results.json
OUT_DIR: list[str] = []  # where rows are written as they come
T0 = time.perf_counter()


def sig(x: float) -> float:
    """``x`` to 4 significant figures: a slow machine's small numbers never round to 0."""
    return float(f"{x:.4g}")


def log(*a: Any) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s]", *a, flush=True)


_HEADER: list[Any] = [None]  # the (section, columns) of the table printed last


def record(section: str, **row: Any) -> None:
    """Keep a measured row, write it out, and print it at once as a Markdown table row (a new
    header when the section or its columns change): a run cut short still shows what it measured."""
    row = {"section": section, **row}
    ROWS.append(row)
    if OUT_DIR:
        dump(OUT_DIR[0])
    keys = [k for k in row if k != "section"]
    if _HEADER[0] != (section, keys):
        _HEADER[0] = (section, keys)
        print(f"\n[{time.perf_counter() - T0:6.1f}s] ## {section}\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    print("| " + " | ".join(str(row[k]) for k in keys) + " |", flush=True)


def check(what: str, ok: bool, detail: Any = "") -> None:
    """A pass/fail line for a target only a GPU can show (also a row of the "checks" table)."""
    record("checks", check=what, result="PASS" if ok else "FAIL", detail=detail)


def soft(section: str, budget_s: float, deadline: float) -> Callable:
    """Run a section; on error or lack of time, record why it did not run and carry on."""

    def deco(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            left = deadline - time.perf_counter()
            if left < budget_s:
                record(
                    section,
                    status=f"not run: time budget ({left:.0f}s left, needs ~{budget_s:.0f}s)",
                )
                return
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - a benchmark section must not stop the rest
                traceback.print_exc()
                record(section, status=f"not run: {type(exc).__name__}: {str(exc)[:300]}")
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

        return run

    return deco


# ------------------------------------------------------------------------------------------
# timing helpers
# ------------------------------------------------------------------------------------------
def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def bench(fn: Callable[[], Any], dev: torch.device, reps: int = 50, warmup: int = 5) -> float:
    """Median seconds per call (CUDA events around each call; wall clock on CPU)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    if dev.type == "cuda":
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
    else:
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def graphed(fn: Callable[[], Any], dev: torch.device, use_graph: bool) -> Callable[[], None]:
    """Capture ``fn`` (already warmed up) in a CUDA graph; returns a replay callable."""
    if not (use_graph and dev.type == "cuda"):
        return fn
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()  # warm-up on a side stream, as torch.cuda.graphs recommends
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


# ------------------------------------------------------------------------------------------
# 1. bandwidth and launch overhead
# ------------------------------------------------------------------------------------------
def section_bandwidth(dev: torch.device, state: dict[str, Any]) -> None:
    n = (2 << 30) if dev.type == "cuda" else (64 << 20)
    src = torch.randn(n // 4, device=dev)
    dst = torch.empty_like(src)
    t = bench(lambda: dst.copy_(src), dev, reps=20)
    gbs = 2 * n / t / 1e9
    state["copy_gbs"] = gbs
    tiny = torch.zeros(1, device=dev)
    t_launch = bench(lambda: tiny.add_(1), dev, reps=200)
    record(
        "bandwidth", copy_gbs=sig(gbs), bytes=2 * n, tiny_kernel_us=sig(t_launch * 1e6)
    )
    src = dst = None  # free before the next section


# ------------------------------------------------------------------------------------------
# 2./3. kernels
# ------------------------------------------------------------------------------------------
def _chain(B: int, k: int, V: int, dev: torch.device, seed: int, close: bool = True):
    g = torch.Generator(device=dev).manual_seed(seed)
    q = torch.softmax(torch.randn(B, k, V, device=dev, generator=g) * 2, -1)
    p = torch.softmax(torch.randn(B, k + 1, V, device=dev, generator=g) * 2, -1)
    if close:
        p[:, :k] = 0.8 * q + 0.2 * p[:, :k]
    x = torch.multinomial(q.reshape(-1, V), 1, generator=g).reshape(B, k)
    u = torch.rand(B, k, device=dev, generator=g)
    e = torch.empty(B, V, device=dev).exponential_(generator=g)
    return x, q, p, u, e


def _sampling_inputs(B: int, V: int, dev: torch.device, seed: int, mode: str):
    g = torch.Generator(device=dev).manual_seed(seed)
    logits = torch.randn(B, V, device=dev, generator=g) * 3
    temp = torch.full((B,), 0.8, device=dev)
    top_k = torch.full((B,), 50 if mode == "topk+topp" else 0, dtype=torch.long, device=dev)
    top_p = torch.full((B,), 0.9 if mode == "topk+topp" else 1.0, device=dev)
    if mode == "greedy":
        temp.zero_()
    u = torch.rand(B, device=dev, generator=g)
    return logits, temp, top_k, top_p, u


def section_kernel_checks(dev: torch.device, state: dict[str, Any]) -> None:
    from ponder.local.kernels import _reference as ref
    from ponder.local.kernels import _triton as tri

    bad = total = 0
    for V in (49152, 128256, 151936):
        for B in (1, 8):
            for seed in range(3):
                args = _chain(B, 4, V, dev, seed, close=seed != 0)
                o1, n1 = ref.verify_chain(*args)
                o2, n2 = tri.verify_chain(*args)
                total += B
                bad += int((o1 != o2).any(-1).sum() + (n1 != n2).sum())
    record("check", op="verify_chain fp32 exact", rows=total, mismatches=bad)
    bad = total = 0
    for V in (49152, 128256):
        for mode in ("greedy", "plain", "topk+topp"):
            for seed in range(3):
                args = _sampling_inputs(8, V, dev, seed, mode)
                total += 8
                bad += int((ref.sample(*args) != tri.sample(*args)).sum())
        for seed in range(2):  # mixed settings per row
            g = torch.Generator(device=dev).manual_seed(seed)
            logits = torch.randn(8, V, device=dev, generator=g) * 3
            temp = torch.tensor([0.0, 0.7, 1.0, 1.5, 1.0, 0.3, 1.0, 2.0], device=dev)
            top_k = torch.tensor([0, 0, 5, 0, 50, 1, V, 3], device=dev)
            top_p = torch.tensor([1.0, 1.0, 1.0, 0.9, 0.8, 1.0, 0.5, 0.95], device=dev)
            u = torch.rand(8, device=dev, generator=g)
            total += 8
            bad += int(
                (
                    ref.sample(logits, temp, top_k, top_p, u)
                    != tri.sample(logits, temp, top_k, top_p, u)
                ).sum()
            )
    record("check", op="sample fp32 exact", rows=total, mismatches=bad)
    worst = 0.0
    inv_ok = True
    for B, Hq, Hkv, T, D, S, start in [
        (1, 32, 8, 1, 128, 4096, 1000), (1, 32, 8, 5, 128, 4096, 3000), (8, 9, 3, 5, 64, 1024, 200),
        (1, 32, 32, 64, 64, 512, 0), (1, 32, 8, 5, 128, 1024, 500),
    ]:  # fmt: skip
        g = torch.Generator(device=dev).manual_seed(B + T)
        q = torch.randn(B, Hq, T, D, device=dev, generator=g).bfloat16()
        kc = torch.randn(B, Hkv, S, D, device=dev, generator=g).bfloat16()
        vc = torch.randn(B, Hkv, S, D, device=dev, generator=g).bfloat16()
        got = tri.attention(q, kc, vc, start).float()
        want = ref.attention(q.float(), kc.float(), vc.float(), start)
        worst = max(worst, float((got - want).norm() / want.norm()))
        if 1 < T <= 16:
            st = torch.full((B,), start, device=dev)
            for t in range(T):
                alone = tri.attention(q[:, :, t : t + 1].contiguous(), kc, vc, st + t)
                inv_ok &= bool(torch.equal(alone[:, :, 0], tri.attention(q, kc, vc, st)[:, :, t]))
    record("check", op="attention bf16 vs fp32 ref", rel_err=f"{worst:.2e}", batch_invariant=inv_ok)
    # Gemma 3's head_dim 256: float32 tiles must fit the block's shared memory (it once needed 283-344 KB)
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator(device=dev).manual_seed(7)
        q = torch.randn(1, 8, 5, 256, device=dev, generator=g).to(dtype)
        kc = torch.randn(1, 4, 2048, 256, device=dev, generator=g).to(dtype)
        vc = torch.randn(1, 4, 2048, 256, device=dev, generator=g).to(dtype)
        try:
            got = tri.attention(q, kc, vc, 1500).float()
            want = ref.attention(q.float(), kc.float(), vc.float(), 1500)
            err = float((got - want).norm() / want.norm())
            check(f"attention head_dim 256 {dtype} launches and matches", err < (1e-4 if dtype == torch.float32 else 1e-2), f"rel err {err:.1e}")
        except Exception as exc:  # noqa: BLE001 - the check is whether it launches
            check(f"attention head_dim 256 {dtype} launches and matches", False, f"{type(exc).__name__}: {str(exc)[:200]}")
    # top-k / top-p distributions without a sort: the same kept tokens as the sorted reference
    bad = total = 0
    for V in (49152, 128256):
        for mode in ("topk+topp", "plain"):
            for seed in range(2):
                logits, temp, top_k, top_p, _ = _sampling_inputs(5, V, dev, seed, mode)
                top_k[::2] = 0  # top-p alone on some rows
                got = tri.warp_probs(logits, temp, top_k, top_p)
                want = ref.warp_probs(logits, temp, top_k, top_p)
                total += 5
                bad += int(((got > 0) != (want > 0)).any(-1).sum() + (~torch.isclose(got, want, atol=1e-6, rtol=1e-4)).any(-1).sum())
    record("check", op="warp_probs (no sort) vs sorted reference", rows=total, mismatches=bad)
    check("warp_probs without a sort == the sorted reference", bad == 0, f"{bad}/{total} rows differ")


def section_kernel_times(dev: torch.device, state: dict[str, Any], compile_: bool) -> None:
    """Each op timed two ways: an eager call (CUDA events around one call: what a caller without
    graphs pays, Python launch overhead included) and inside a CUDA graph (10 calls per replay:
    the GPU time alone). torch.compile variants are compiled per shape (dynamic=False)."""
    from ponder.local.kernels import _reference as ref
    from ponder.local.kernels import _triton as tri

    variants: dict[str, dict[str, Callable]] = {
        "verify_chain": {"triton": tri.verify_chain, "torch": ref.verify_chain},
        "sample": {"triton": tri.sample, "torch": ref.sample},
        "attention": {"triton": tri.attention, "torch": ref.attention},
        "warp_probs": {"triton": tri.warp_probs, "torch": ref.warp_probs},
    }
    if compile_:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = 64
        for v in variants.values():
            v["compile"] = torch.compile(v["torch"], dynamic=False)

    def run(op: str, shape: str, args: tuple) -> None:
        if time.perf_counter() > state["deadline"]:
            record("kernel", op=op, shape=shape, status="not run: time budget")
            return
        times: dict[str, float | str] = {}
        for n, f in variants[op].items():
            try:
                times[n] = bench(lambda f=f, a=args: f(*a), dev)
                times[n + "_graph"] = bench_graph(lambda f=f, a=args: f(*a), dev)
            except Exception as exc:  # noqa: BLE001
                times[n] = f"failed: {type(exc).__name__}"
        _kernel_row(op, shape, times)

    k = 4
    for V in (49152, 128256, 151936):
        for B in (1, 8):
            run("verify_chain", f"B={B} V={V} k={k}", _chain(B, k, V, dev, 0))
            for mode in ("plain", "topk+topp"):
                run("sample", f"B={B} V={V} {mode}", _sampling_inputs(B, V, dev, 0, mode))
        for B in (1, 5):  # a draft step's row, a verify pass's k + 1 rows: sort vs thresholds
            run("warp_probs", f"B={B} V={V} topk+topp", tuple(_sampling_inputs(B, V, dev, 0, "topk+topp")[:4]))
    for B, T, S, ctx in [
        (1, 1, 4096, 1024),
        (1, 5, 4096, 1024),
        (1, 5, 4096, 4000),
        (8, 5, 4096, 1024),
    ]:
        Hq, Hkv, D = 32, 8, 128
        q = torch.randn(B, Hq, T, D, device=dev).bfloat16()
        kc = torch.randn(B, Hkv, S, D, device=dev).bfloat16()
        vc = torch.randn(B, Hkv, S, D, device=dev).bfloat16()
        start = torch.full((B,), ctx - T, device=dev)
        run("attention", f"8B heads B={B} T={T} ctx={ctx}", (q, kc, vc, start))


def bench_graph(fn: Callable[[], Any], dev: torch.device, calls: int = 10) -> float:
    """Seconds per call with ``calls`` calls captured in one CUDA graph (launch gaps removed)."""

    def many() -> None:
        for _ in range(calls):
            fn()

    replay = graphed(many, dev, True)
    return bench(replay, dev, reps=20, warmup=2) / calls


def _kernel_row(op: str, shape: str, times: dict[str, Any]) -> None:
    row: dict[str, Any] = {}
    for n, t in times.items():
        row[f"{n}_us"] = sig(t * 1e6) if isinstance(t, float) else t
    for base in ("torch", "compile"):
        for suffix in ("", "_graph"):
            a, b = times.get(base + suffix), times.get("triton" + suffix)
            if isinstance(a, float) and isinstance(b, float):
                row[f"x_vs_{base}{suffix}"] = sig(a / b)
    record("kernel", op=op, shape=shape, **row)


# ------------------------------------------------------------------------------------------
# 4. end to end, through the public Engine API
# ------------------------------------------------------------------------------------------
def build_model(
    cfg: dict[str, Any], dev: torch.device, n_draft: int, residual_scale: float, seed: int
):
    from ponder.local import ModelArgs, Transformer

    torch.manual_seed(seed)
    # Untied head: with random tied weights the argmax is the input token itself (e.e ~ dim), so
    # greedy decoding would just repeat it. Untying reads the same bytes per token (the table
    # lookup reads one row; the head reads the full matrix either way).
    cfg = {**cfg, "tie_embeddings": False}
    prev = torch.get_default_dtype()
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):
            model = Transformer(ModelArgs(**cfg))
    finally:
        torch.set_default_dtype(prev)
    with torch.no_grad():
        for layer in model.layers[n_draft:]:
            layer.attention.wo.weight.mul_(residual_scale)
            layer.feed_forward.w2.weight.mul_(residual_scale)
    return model.eval()


def weight_bytes(model: Any) -> int:
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    if not model.args.tie_embeddings:  # the embedding table is read one row per token
        n -= model.tok_embeddings.weight.numel() * model.tok_embeddings.weight.element_size()
    return n


def step_times(engine: Any, prompt_ids: list[int], k: int, params: Any, at: int, reps: int = 30) -> dict[str, float]:
    """The pieces of a step of ``engine``'s own device loop at position ``at``: "target" (a
    target-only decode), "draft" (k proposals) and "verify" (target pass over k+1 + acceptance),
    each one CUDA graph captured the way the loop captures its steps, median of ``reps`` replays
    (``ponder.local._bench.step_times``): the very forward, kernels and cache the timed
    ``generate_ids`` runs. Leviathan's predicted step = draft + verify."""
    from ponder.local._bench import step_times as engine_step_times

    return engine_step_times(engine, prompt_ids, k, params, at=at, reps=reps)


def forward_kind(engine: Any) -> str:
    """Which forward the engine's device loop runs: the fused layer kernels or the torch layers."""
    m = engine.model
    return f"{'fused' if m.fused and m.fusable else 'torch layers'}, {m.ops.name} ops, cache {engine.context + engine.k_max + 1}"


def generate_twice(
    engine: Any, prompt_ids: list[int], n: int, params: Any, dev: torch.device
) -> dict[str, Any]:
    """Two identical ``Engine.generate_ids`` calls; the second is the timed one (the engine
    captured its graphs when it was built; the first call compiles what prefill needs)."""
    sync(dev)
    t = time.perf_counter()
    first, _, _ = engine.generate_ids(prompt_ids, max_tokens=n, params=params, seed=0, stop_ids=())
    sync(dev)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    ids, finish, stats = engine.generate_ids(
        prompt_ids, max_tokens=n, params=params, seed=0, stop_ids=()
    )
    sync(dev)
    wall = time.perf_counter() - t
    if stats.new_tokens < 2 or stats.decode_s <= 0 or not stats.target_steps:
        raise RuntimeError(f"no decode step to time: {stats.new_tokens} tokens, {finish!r}")
    tok_s = (stats.new_tokens - 1) / stats.decode_s  # the first token comes from prefill
    row = dict(
        loop=engine.loop, ops=engine.model.ops.name, new_tokens=stats.new_tokens,
        tok_s=sig(tok_s), wall_tok_s=sig(stats.new_tokens / wall),
        ms_per_tok=sig(1e3 / tok_s), target_steps=stats.target_steps,
        forward=forward_kind(engine) if engine.loop != "host" else "torch layers (host loop)",
        engine_capture_s=sig(engine.capture_s), capture_in_timed_run=stats.capture_s > 0,
        ms_per_step=sig(1e3 * stats.decode_s / stats.target_steps),
        tokens_per_step=sig(stats.tokens_per_step),
        accept_rate=sig(stats.acceptance_rate) if stats.drafted else "",
        prefill_ms=sig(stats.prefill_s * 1e3), first_call_s=sig(first_s),
        repeat_identical=ids == first,
    )  # fmt: skip
    return {"ids": ids, "stats": stats, "tok_s": tok_s, "row": row}


def first_diff(x: list[int], y: list[int]) -> int:
    """Index of the first differing token (the shorter length when one is a prefix)."""
    return next(
        (i for i, (a, b) in enumerate(zip(x, y, strict=False)) if a != b), min(len(x), len(y))
    )


def implied_alpha(tokens_per_step: float, k: int) -> float:
    """The i.i.d. acceptance rate that Leviathan's E[tokens/step] = (1-a^(k+1))/(1-a) maps to
    ``tokens_per_step`` (acceptances of real runs are correlated, so it differs from accepted/drafted)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (1 - mid ** (k + 1)) / (1 - mid) < tokens_per_step:
            lo = mid
        else:
            hi = mid
    return lo


def section_e2e(
    name: str,
    cfg: dict[str, Any],
    dev: torch.device,
    state: dict[str, Any],
    opt: argparse.Namespace,
) -> None:
    """Every tok/s here comes from ``Engine.generate_ids`` (the product's public API); the step
    times of the Leviathan check come from the public ``Transformer.forward``."""
    import gc

    from ponder.local import Engine, SamplingParams, make_drafter

    n_draft = max(1, round(cfg["n_layers"] * opt.draft_fraction))
    k, P, N = opt.k, opt.prompt_len, opt.new_tokens
    draft = f"layers:{n_draft}"
    model = build_model(cfg, dev, n_draft, opt.residual_scale, seed=0)
    g = torch.Generator(device="cpu").manual_seed(1)
    prompt = torch.randint(0, cfg["vocab_size"], (1, P), generator=g)
    prompt_ids = prompt[0].tolist()
    wb = weight_bytes(model)
    a = model.args
    kv_per_pos = 2 * a.n_layers * a.n_kv_heads * a.head_dim * model.dtype.itemsize
    greedy = SamplingParams()
    sampled = SamplingParams(temperature=opt.temperature, top_p=opt.top_p)
    sp = f"T={opt.temperature} top-p={opt.top_p}"
    TG, SG = "target-only greedy", f"spec greedy {draft} k={k}"
    TS, SS = f"target-only sampled {sp}", f"spec sampled {draft} k={k} {sp}"
    runs: dict[str, dict[str, Any]] = {}
    steps: dict[str, dict[str, float]] = {}

    def part(mode: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one broken row must not stop the others
            traceback.print_exc()
            record("e2e", model=name, mode=mode, status=f"not run: {type(exc).__name__}: {str(exc)[:300]}")  # fmt: skip

    def speedup(key: str, base: str) -> dict[str, Any]:
        if base not in runs:
            return {}
        return {"speedup_vs_target_only": sig(runs[key]["tok_s"] / runs[base]["tok_s"])}

    def identity(key: str, n: int | None = None) -> dict[str, Any]:
        if TG not in runs:
            return {"greedy_identical_to_target": "n/a (target-only greedy not run)"}
        x, y = runs[key]["ids"], runs[TG]["ids"][: n or N]
        return {"greedy_identical_to_target": x == y, "first_divergence": first_diff(x, y)}

    def run(key: str, engine: Any, params: Any, n: int = N) -> dict[str, Any]:
        runs[key] = generate_twice(engine, prompt_ids, n, params, dev)
        row = runs[key]["row"]
        check(f"{name}: {key}: no graph captured inside the timed run", not row["capture_in_timed_run"],
              f"engine built (caches + graphs) in {row['engine_capture_s']}s")  # fmt: skip
        return runs[key]

    # Every engine on these weights is built (caches allocated, graphs captured) before any timing.
    ctx = dict(context=P + N, backend=opt.backend, loop="device")
    engines = {
        "target": Engine(model, tokenizer=None, drafter=None, k=k, adaptive=False, **ctx),
        "spec": Engine(model, tokenizer=None, drafter=make_drafter(draft, model), k=k, adaptive=False, **ctx),
    }
    at = P + N // 2  # the middle of the decoded span: the average context the e2e runs attend over
    for label, params in (("greedy", greedy), ("sampled", sampled)):
        part(f"step times {label}", lambda label=label, params=params: steps.update(
            {label: step_times(engines["spec"], prompt_ids, k, params, at, opt.step_reps)}
            | {f"{label} target": step_times(engines["target"], prompt_ids, k, params, at, opt.step_reps)}
        ))  # fmt: skip

    def target_greedy() -> None:
        r = run(TG, engines["target"], greedy)
        gbs = (wb + kv_per_pos * (P + N / 2)) * r["tok_s"] / 1e9  # bytes read per token
        record(
            "e2e", model=name, mode=TG, **r["row"], GBs=sig(gbs),
            pct_copy_bw=sig(100 * gbs / state.get("copy_gbs", float("nan"))),
            weights_GB=sig(wb / 1e9),
        )  # fmt: skip
        state[name] = {"prompt": prompt, "tokens": torch.tensor(r["ids"]), "n_draft": n_draft}
        if "8B" in name:
            pct = 100 * gbs / state.get("copy_gbs", float("nan"))
            check(f"{name}: target-only greedy >= 80% of copy bandwidth", pct >= 80, f"{pct:.1f}%")

    def spec_greedy() -> None:
        r = run(SG, engines["spec"], greedy)
        same = identity(SG)
        record("e2e", model=name, mode=SG, **r["row"], **speedup(SG, TG), **same)
        ok = same.get("greedy_identical_to_target") is True
        check(f"{name}: {model.dtype} speculative greedy == target-only greedy", ok, f"first divergence {same.get('first_divergence')}")  # fmt: skip

    def target_sampled() -> None:
        r = run(TS, engines["target"], sampled)
        record("e2e", model=name, mode=TS, **r["row"])

    def spec_sampled() -> None:
        r = run(SS, engines["spec"], sampled)
        record("e2e", model=name, mode=SS, **r["row"], **speedup(SS, TS))

    part(TG, target_greedy)
    part(SG, spec_greedy)
    part(TS, target_sampled)
    part(SS, spec_sampled)

    def sampled_vs_greedy() -> None:
        gs, ss = runs[SG]["stats"], runs[SS]["stats"]
        g_step, s_step = gs.decode_s / gs.target_steps, ss.decode_s / ss.target_steps
        row: dict[str, Any] = dict(
            greedy_tok_s=sig(runs[SG]["tok_s"]), sampled_tok_s=sig(runs[SS]["tok_s"]),
            tok_s_ratio=sig(runs[SS]["tok_s"] / runs[SG]["tok_s"]),
            greedy_accept=sig(gs.acceptance_rate), sampled_accept=sig(ss.acceptance_rate),
            greedy_tokens_per_step=sig(gs.tokens_per_step),
            sampled_tokens_per_step=sig(ss.tokens_per_step),
            greedy_ms_per_step=sig(g_step * 1e3), sampled_ms_per_step=sig(s_step * 1e3),
            # the acceptance-adjusted comparison: time per target step, and the sampled speed
            # at greedy's tokens per step
            step_time_ratio=sig(s_step / g_step),
            sampled_tok_s_at_greedy_accept=sig(gs.tokens_per_step / s_step),
            within_15pct=s_step / g_step <= 1.15,
        )  # fmt: skip
        if TG in runs and TS in runs:
            row["target_only_sampled_over_greedy_ms_per_tok"] = sig(runs[TG]["tok_s"] / runs[TS]["tok_s"])  # fmt: skip
        record("sampled vs greedy", model=name, **row)
        check(f"{name}: sampled speculative step within 15% of greedy", row["within_15pct"], f"x{row['step_time_ratio']}")

    if SG in runs and SS in runs:
        part("sampled vs greedy", sampled_vs_greedy)

    def leviathan(key: str, label: str) -> None:
        st = runs[key]["stats"]
        parts, tparts = steps[label], steps[f"{label} target"]
        t_d, t_v, t_t = parts["draft"] / k, parts["verify"], tparts["target"]
        predicted = st.tokens_per_step / (parts["draft"] + t_v)
        alpha = st.acceptance_rate
        pct = 100 * runs[key]["tok_s"] / predicted
        record(
            "leviathan", model=name, mode=key, at_position=at, forward=forward_kind(engines["spec"]),
            same_forward_as_run=forward_kind(engines["spec"]) == runs[key]["row"]["forward"],
            draft_ms=sig(t_d * 1e3), verify_ms=sig(t_v * 1e3), target_ms=sig(t_t * 1e3), c=sig(t_d / t_t),
            verify_over_target=sig(t_v / t_t), tokens_per_step=sig(st.tokens_per_step),
            alpha_accept_rate=sig(alpha),
            alpha_leviathan_implied=sig(implied_alpha(st.tokens_per_step, k)),
            leviathan_tokens_per_step=sig((1 - alpha ** (k + 1)) / (1 - alpha) if alpha < 1 else k + 1),
            predicted_tok_s=sig(predicted), measured_tok_s=sig(runs[key]["tok_s"]),
            pct_of_predicted=sig(pct),
        )  # fmt: skip
        check(f"{name}: {key} >= 90% of the Leviathan prediction", pct >= 90, f"{pct:.1f}%")

    for key, label in ((SG, "greedy"), (SS, "sampled")):
        if key in runs and label in steps:
            part(f"leviathan {key}", lambda key=key, label=label: leviathan(key, label))

    # The eager host loop (no device-resident positions, no graphs), so the graph path's gain shows.
    n_host = min(opt.host_tokens, N)
    for key, eng_key, device_key in ((f"{TG}, loop=host", "target", TG), (f"{SG}, loop=host", "spec", SG)):  # fmt: skip
        if not opt.host:
            break
        left = opt.deadline - time.perf_counter()
        est = 2 * n_host * 5 / runs[device_key]["tok_s"] if device_key in runs else 30.0
        if left < est + 10:
            record("e2e", model=name, mode=key, status=f"not run: time budget ({left:.0f}s left, needs ~{est:.0f}s)")  # fmt: skip
            continue

        def host(key: str = key, eng_key: str = eng_key, device_key: str = device_key) -> None:
            drafter = engines[eng_key].drafter
            eng = Engine(model, tokenizer=None, drafter=drafter, k=k, adaptive=False, loop="host", backend=opt.backend)
            r = run(key, eng, greedy, n_host)
            gain = {}
            if device_key in runs:
                gain = {"device_over_host": sig(runs[device_key]["tok_s"] / r["tok_s"])}
            record("e2e", model=name, mode=key, **r["row"], **gain, **identity(key, n_host))

        part(key, host)

    def long_prompt() -> None:
        """A long prompt through the engine: prefill memory beyond the weights and the cache."""
        n = opt.long_prompt
        eng = Engine(model, tokenizer=None, k=k, adaptive=False, context=n + 8, backend=opt.backend, loop="device")
        ids = torch.randint(0, cfg["vocab_size"], (n,), generator=g).tolist()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t = time.perf_counter()
        _, _, st = eng.generate_ids(ids, max_tokens=4, params=greedy, seed=0, stop_ids=())
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
        scratch = torch.cuda.max_memory_allocated() - base
        record("long prompt", model=name, prompt_tokens=n, prefill_s=sig(st.prefill_s), wall_s=sig(wall),
               prefill_tok_s=sig(n / st.prefill_s), scratch_GiB=sig(scratch / 2**30),
               cache_GiB=sig(kv_per_pos * (n + 8 + 2 * k + 1) / 2**30), engine_capture_s=sig(eng.capture_s))  # fmt: skip
        check(f"{name}: a {n}-token prompt prefills in < 2 GiB of scratch", scratch < 2 * 2**30, f"{scratch / 2**30:.2f} GiB")

    engines.clear()
    runs.clear()
    gc.collect()
    if opt.long_prompt and dev.type == "cuda" and "8B" in name:
        if opt.deadline - time.perf_counter() > 60:
            part("long prompt", long_prompt)
        else:
            record("long prompt", model=name, status="not run: time budget")
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    if opt.hf and name in state:
        section_hf(name, model, cfg, dev, state, opt)
    model = None  # free before the next shape
    if dev.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------
# 5. Hugging Face transformers on the same weights
# ------------------------------------------------------------------------------------------
def to_hf(model: Any, n_layers: int | None = None) -> Any:
    """A LlamaForCausalLM whose parameters ARE the ponder model's (views, no copy)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    a = model.args
    n = a.n_layers if n_layers is None else n_layers
    rope = {"rope_type": "default", "rope_theta": a.rope_theta}
    if a.rope_scaling:
        rope = {**a.rope_scaling, "rope_theta": a.rope_theta}
    cfg = LlamaConfig(
        vocab_size=a.vocab_size, hidden_size=a.dim, intermediate_size=a.intermediate_size,
        num_hidden_layers=n, num_attention_heads=a.n_heads, num_key_value_heads=a.n_kv_heads,
        head_dim=a.head_dim, rms_norm_eps=a.norm_eps, rope_parameters=rope,
        tie_word_embeddings=a.tie_embeddings, max_position_embeddings=8192,
    )  # fmt: skip
    with torch.device(model.device):
        hf = LlamaForCausalLM._from_config(cfg, dtype=model.dtype)
    H, Hkv, D, I = a.n_heads, a.n_kv_heads, a.head_dim, a.intermediate_size  # noqa: E741
    sd: dict[str, torch.Tensor] = {"model.embed_tokens.weight": model.tok_embeddings.weight,
                                   "model.norm.weight": model.norm.weight,
                                   "lm_head.weight": model.output.weight}  # fmt: skip
    for i, layer in enumerate(model.layers[:n]):
        pre = f"model.layers.{i}."
        wq, wk, wv = layer.attention.wqkv.weight.split([H * D, Hkv * D, Hkv * D], dim=0)
        gate, up = layer.feed_forward.w13.weight.split(I, dim=0)
        sd.update({
            pre + "self_attn.q_proj.weight": wq, pre + "self_attn.k_proj.weight": wk,
            pre + "self_attn.v_proj.weight": wv, pre + "self_attn.o_proj.weight": layer.attention.wo.weight,
            pre + "mlp.gate_proj.weight": gate, pre + "mlp.up_proj.weight": up,
            pre + "mlp.down_proj.weight": layer.feed_forward.w2.weight,
            pre + "input_layernorm.weight": layer.attention_norm.weight,
            pre + "post_attention_layernorm.weight": layer.ffn_norm.weight,
        })  # fmt: skip
    missing, unexpected = hf.load_state_dict(sd, strict=False, assign=True)
    missing = [m for m in missing if "rotary" not in m]
    if missing or unexpected:
        raise RuntimeError(f"HF weight mapping: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if a.tie_embeddings:
        hf.lm_head.weight = hf.model.embed_tokens.weight
    return hf.eval()


def section_hf(
    name: str,
    model: Any,
    cfg: dict[str, Any],
    dev: torch.device,
    state: dict[str, Any],
    opt: argparse.Namespace,
) -> None:
    try:
        hf = to_hf(model)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        record("hf", model=name, status=f"not run: {type(exc).__name__}: {str(exc)[:200]}")
        return
    info = state[name]
    prompt = info["prompt"].to(dev)
    ours = info["tokens"]
    N = min(opt.hf_tokens, len(ours))
    k = opt.k

    def gen(label: str, **kw: Any) -> torch.Tensor | None:
        try:
            with torch.no_grad():
                warm = N if "cache_implementation" in kw else 4  # static: same shapes as timed
                hf.generate(prompt, max_new_tokens=warm, min_new_tokens=warm, do_sample=False, **kw)
                sync(dev)
                t = time.perf_counter()
                out = hf.generate(prompt, max_new_tokens=N, min_new_tokens=N, do_sample=False, **kw)
                sync(dev)
                dt = time.perf_counter() - t
            toks = out[0, prompt.shape[1] :].cpu()
            n_same = int((toks[:N] == ours[:N]).cumprod(0).sum())
            record(
                "hf",
                model=name,
                mode=label,
                tok_s=sig(N / dt),
                greedy_matches_ponder_prefix=f"{n_same}/{N}",
            )
            return toks
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            record(
                "hf",
                model=name,
                mode=label,
                status=f"not run: {type(exc).__name__}: {str(exc)[:200]}",
            )
            return None

    plain = gen("HF generate eager (dynamic cache)")
    if opt.hf_static and name not in opt.hf_static_models.split(","):
        pass  # static cache (with its compile) is timed at one shape only, to fit the time budget
    elif opt.hf_static and opt.deadline - time.perf_counter() < 200:
        record("hf", model=name, mode="HF generate static cache", status="not run: time budget")
    elif opt.hf_static:
        gen("HF generate static cache", cache_implementation="static")
    try:
        draft = to_hf(model, info["n_draft"])
        draft.generation_config.num_assistant_tokens = k
        draft.generation_config.num_assistant_tokens_schedule = "constant"
        draft.generation_config.assistant_confidence_threshold = 0.0
        assisted = gen(f"HF assisted (layers:{info['n_draft']}, k={k})", assistant_model=draft)
        if plain is not None and assisted is not None:
            same = int((assisted[:N] == plain[:N]).cumprod(0).sum())
            record(
                "hf",
                model=name,
                mode="HF assisted vs HF plain greedy",
                matching_prefix=f"{same}/{N}",
            )
        del draft
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        record(
            "hf",
            model=name,
            mode="HF assisted",
            status=f"not run: {type(exc).__name__}: {str(exc)[:200]}",
        )
    hf = None  # free the HF module before the next shape


# ------------------------------------------------------------------------------------------
def print_tables() -> None:
    print("\n" + "=" * 100)
    by: dict[str, list[dict[str, Any]]] = {}
    for row in ROWS:
        by.setdefault(row["section"], []).append(row)
    for section, rows in by.items():
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k != "section" and k not in keys]
        print(f"\n## {section}\n")
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for row in rows:
            print("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument(
        "--smoke", action="store_true", help="imports, bandwidth and kernel checks only"
    )
    ap.add_argument("--tiny", action="store_true", help="a tiny model shape (CPU logic check)")
    ap.add_argument("--models", default=",".join(SHAPES), help="comma-separated shape names")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument(
        "--draft-fraction", type=float, default=0.125, help="layer-cut draft: this share of layers"
    )
    ap.add_argument("--residual-scale", type=float, default=0.2)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7, help="of the sampled rows")
    ap.add_argument("--top-p", type=float, default=0.9, help="of the sampled rows")
    ap.add_argument(
        "--host-tokens", type=int, default=128, help="new tokens of the loop=host rows (slow)"
    )
    ap.add_argument("--no-host", dest="host", action="store_false", help="skip the loop=host rows")
    ap.add_argument("--hf-tokens", type=int, default=64)
    ap.add_argument("--no-hf", dest="hf", action="store_false")
    ap.add_argument("--no-hf-static", dest="hf_static", action="store_false")
    ap.add_argument("--hf-static-models", default="SmolLM2-1.7B,tiny")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--no-kernel-times", dest="kernel_times", action="store_false")
    ap.add_argument("--backend", default="auto", help="kernel backend of the engines: auto, torch or triton")
    ap.add_argument("--step-reps", type=int, default=30, help="replays per step piece (Leviathan)")
    ap.add_argument("--long-prompt", type=int, default=16000, help="tokens of the 8B long-prompt check (0: skip)")
    ap.add_argument(
        "--budget-s", type=float, default=560.0, help="stop starting sections after this"
    )
    opt = ap.parse_args()
    if opt.new_tokens < 2 or opt.host_tokens < 2:
        ap.error("--new-tokens and --host-tokens must be >= 2 (the first token comes from prefill)")
    dev = torch.device(opt.device)
    deadline = T0 + opt.budget_s
    opt.deadline = deadline
    OUT_DIR.append(opt.out)
    import importlib

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("triton", "transformers"):
        try:
            versions[mod] = importlib.import_module(mod).__version__
        except Exception as exc:  # noqa: BLE001
            versions[mod] = f"missing ({type(exc).__name__})"
    gpu = torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor() or "cpu"
    record("env", device=gpu, argv=" ".join(sys.argv), **versions)
    state: dict[str, Any] = {}
    soft("bandwidth", 5, deadline)(lambda: section_bandwidth(dev, state))()
    if dev.type == "cuda":
        soft("check", 20, deadline)(lambda: section_kernel_checks(dev, state))()
    dump(opt.out)
    if not opt.smoke:
        shapes = {"tiny": TINY} if opt.tiny else {n: SHAPES[n] for n in opt.models.split(",") if n}
        if opt.tiny:
            opt.new_tokens = min(opt.new_tokens, 32)
            opt.host_tokens = min(opt.host_tokens, 32)
        # Most important first: the 8B targets, then the smaller shapes, then the kernel table.
        order = sorted(shapes, key=lambda n: n != "Llama-3.1-8B")
        for name in order:
            soft(f"e2e {name}", 60 if "8B" in name else 30, deadline)(
                lambda name=name: section_e2e(name, shapes[name], dev, state, opt)
            )()
            dump(opt.out)
        if opt.kernel_times and dev.type == "cuda":
            state["deadline"] = deadline
            soft("kernel", 30, deadline)(lambda: section_kernel_times(dev, state, opt.compile))()
    dump(opt.out)
    print_tables()


def dump(out: str) -> None:
    """Write what is measured so far (a run killed at its time limit still leaves its numbers)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(ROWS, f, indent=1, default=str)
    stdout = sys.stdout
    with open(os.path.join(out, "table.md"), "w") as f:
        sys.stdout = f
        try:
            print_tables()
        finally:
            sys.stdout = stdout


if __name__ == "__main__":
    main()
