"""One-call GPU benchmark of ponder's speculative engine and its Triton kernels.

    PYTHONPATH=. python benchmarks/gpu_bench.py --out $OUT          # the full run (H100: ~8 min)
    PYTHONPATH=. python benchmarks/gpu_bench.py --smoke             # imports + kernel checks only
    PYTHONPATH=. python benchmarks/gpu_bench.py --device cpu --tiny # the logic, on a laptop

Sections (each fails soft: a broken one prints "not run: <reason>" and the rest still runs):
  1. copy bandwidth (large device-to-device copy, bytes read + written) and launch overhead;
  2. kernel correctness on the device (exact vs the torch references, same noise);
  3. per-kernel times: Triton vs torch eager vs torch.compile, batch 1/8, vocab 49k/128k/152k;
  4. end to end, batch 1, bf16 random weights generated on the device, at the SmolLM2-135M,
     SmolLM2-1.7B and Llama-3.1-8B shapes: target-only decode and greedy speculative decoding
     (layer-cut draft sharing the target's cache), each step captured in one CUDA graph; achieved
     GB/s; the Leviathan check (draft step and verify step timed alone); greedy identity;
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
import torch.nn.functional as F

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
        rope_theta=500000.0, norm_eps=1e-5,
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


def log(*a: Any) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s]", *a, flush=True)


def record(section: str, **row: Any) -> None:
    row = {"section": section, **row}
    ROWS.append(row)
    if OUT_DIR:
        dump(OUT_DIR[0])
    log(section, {k: v for k, v in row.items() if k != "section"})


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
        "bandwidth", copy_gbs=round(gbs, 1), bytes=2 * n, tiny_kernel_us=round(t_launch * 1e6, 2)
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
        row[f"{n}_us"] = round(t * 1e6, 1) if isinstance(t, float) else t
    for base in ("torch", "compile"):
        for suffix in ("", "_graph"):
            a, b = times.get(base + suffix), times.get("triton" + suffix)
            if isinstance(a, float) and isinstance(b, float):
                row[f"x_vs_{base}{suffix}"] = round(a / b, 2)
    record("kernel", op=op, shape=shape, **row)


# ------------------------------------------------------------------------------------------
# 4. end to end
# ------------------------------------------------------------------------------------------
class Runner:
    """CUDA-graph-friendly decode/verify over the engine's ``Transformer`` (its weights, caches,
    RoPE tables and kernel ops): positions live in a device tensor, so one captured graph serves
    every step and the whole speculative iteration runs with no host synchronisation."""

    def __init__(self, model: Any, max_len: int, fused: bool = False) -> None:
        self.m = model
        self.fused = fused
        self.cos_t = model.rope_cos.to(model.dtype).contiguous()
        self.sin_t = model.rope_sin.to(model.dtype).contiguous()
        self.dev = model.device
        self.seq = torch.zeros(1, max_len, dtype=torch.long, device=self.dev)
        self.L = torch.zeros(1, dtype=torch.long, device=self.dev)  # committed tokens
        self._ar: dict[int, torch.Tensor] = {}
        self._onehot: tuple[torch.Tensor, ...] | None = None
        self._blk: torch.Tensor | None = None

    def ar(self, n: int) -> torch.Tensor:
        if n not in self._ar:
            self._ar[n] = torch.arange(n, device=self.dev)
        return self._ar[n]

    def forward(
        self, tokens: torch.Tensor, pos: torch.Tensor, n_layers: int | None = None
    ) -> torch.Tensor:
        from ponder.local._model import apply_rope

        m = self.m
        if self.fused:
            return self.forward_fused(tokens, pos, n_layers)
        B, T = tokens.shape
        H, Hkv, D = m.args.n_heads, m.args.n_kv_heads, m.args.head_dim
        positions = pos[:, None] + self.ar(T)[None, :]
        cos = m.rope_cos[positions[0]].to(m.dtype)
        sin = m.rope_sin[positions[0]].to(m.dtype)
        x = m.tok_embeddings(tokens)
        n = m.args.n_layers if n_layers is None else n_layers
        for layer, cache in zip(m.layers[:n], m.caches[:n], strict=True):
            att = layer.attention
            qkv = att.wqkv(layer.attention_norm(x))
            q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
            q = apply_rope(q.view(B, T, H, D).transpose(1, 2), cos, sin)
            k = apply_rope(k.view(B, T, Hkv, D).transpose(1, 2), cos, sin)
            cache.k.index_copy_(2, positions[0], k)
            cache.v.index_copy_(2, positions[0], v.view(B, T, Hkv, D).transpose(1, 2))
            y = m.ops.attention(q, cache.k, cache.v, pos)
            x = x + att.wo(y.transpose(1, 2).reshape(B, T, H * D))
            x = x + layer.feed_forward(layer.ffn_norm(x))
        return m.output(m.norm(x)).float()

    def forward_fused(
        self, tokens: torch.Tensor, pos: torch.Tensor, n_layers: int | None = None
    ) -> torch.Tensor:
        """The same layer math with the fused kernels: 4 matmuls + 5 launches per layer."""
        from ponder.local.kernels._triton_fused import add_rmsnorm, rope_kv_append, silu_mul

        m = self.m
        B, T = tokens.shape
        H, Hkv, D = m.args.n_heads, m.args.n_kv_heads, m.args.head_dim
        eps = m.args.norm_eps
        n = m.args.n_layers if n_layers is None else n_layers
        layers = m.layers[:n]
        x = m.tok_embeddings(tokens)
        h, _ = add_rmsnorm(x, None, layers[0].attention_norm.weight, eps)
        for i, (layer, cache) in enumerate(zip(layers, m.caches[:n], strict=True)):
            att = layer.attention
            qkv = F.linear(h, att.wqkv.weight, att.wqkv.bias)
            q = rope_kv_append(qkv, self.cos_t, self.sin_t, pos, cache.k, cache.v, H, Hkv)
            y = m.ops.attention(q, cache.k, cache.v, pos)
            a = F.linear(y.transpose(1, 2).reshape(B, T, H * D), att.wo.weight)
            h, x = add_rmsnorm(a, x, layer.ffn_norm.weight, eps)
            f = F.linear(
                silu_mul(F.linear(h, layer.feed_forward.w13.weight)), layer.feed_forward.w2.weight
            )
            nxt = layers[i + 1].attention_norm.weight if i + 1 < n else m.norm.weight
            h, x = add_rmsnorm(f, x, nxt, eps)
        return F.linear(h, m.output.weight).float()

    def reset(self, prompt: torch.Tensor) -> None:
        P = prompt.shape[1]
        self.seq.zero_()
        self.seq[:, :P] = prompt
        self.L.fill_(P)
        with torch.no_grad():
            self.m(prompt[:, : P - 1], 0)  # the engine's own prefill; the last token is pending

    def target_step(self, width: int = 1) -> None:
        """Greedy decode of one token; ``width`` > 1 pads the block like a verification."""
        pos = self.L - 1
        tok = self.seq.gather(1, pos[:, None] + self.ar(width)[None, :])
        nxt = self.forward(tok, pos)[:, 0].argmax(-1)
        self.seq.scatter_(1, self.L[:, None], nxt[:, None])
        self.L.add_(1)

    def spec_iter(self, k: int, n_draft: int) -> None:
        """k greedy draft steps through the first n_draft layers, one verify pass, fused accept.

        Bookkeeping is kept to ~17 small kernels: the block [pending, x_1..x_k] lives in one
        buffer that the draft argmaxes write into, and the commit scatters the padded output
        as is (the -1 padding lands past the committed length, where nothing reads it).
        """
        pos = (self.L - 1) + self.ar(k + 1)  # positions of [pending, x_1..x_k]
        if self._blk is None or self._blk.shape[1] != k + 1:
            self._blk = torch.zeros(1, k + 1, dtype=torch.long, device=self.dev)
        blk = self._blk
        torch.gather(self.seq, 1, pos[None, :], out=blk)
        for i in range(k):
            lg = self.forward(blk[:, i : i + 1], pos[i : i + 1], n_draft)
            torch.argmax(lg[:, 0], dim=-1, keepdim=True, out=blk[:, i + 1 : i + 2])
        logits = self.forward(blk, pos[:1])
        V = logits.shape[-1]
        if (
            self._onehot is None
            or self._onehot[0].shape[-1] != V
            or self._onehot[0].shape[1] != k + 1
        ):
            self._onehot = (
                torch.zeros(1, k + 1, V, device=self.dev), torch.zeros(1, k, V, device=self.dev),
                torch.ones(1, k, device=self.dev), torch.ones(1, V, device=self.dev),
            )  # fmt: skip
        p, q, u, race = self._onehot  # greedy: one-hot p and q, any positive noise
        p.zero_().scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        draft = blk[:, 1:]
        q.zero_().scatter_(-1, draft[..., None], 1.0)
        out, n_acc = self.m.ops.verify_chain(draft, q, p, u, race)
        self.seq.scatter_(1, (pos + 1)[None, :], out)
        self.L.add_(n_acc + 1)  # accepted drafts = tokens made - iterations (counted on the host)


def build_model(
    cfg: dict[str, Any], dev: torch.device, n_draft: int, residual_scale: float, seed: int
):
    from ponder.local._model import ModelArgs, Transformer

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


def section_e2e(
    name: str,
    cfg: dict[str, Any],
    dev: torch.device,
    state: dict[str, Any],
    opt: argparse.Namespace,
) -> None:
    backend = "triton" if dev.type == "cuda" else "torch"
    L_ = cfg["n_layers"]
    n_draft = max(1, round(L_ * opt.draft_fraction))
    k = opt.k
    P, N = opt.prompt_len, opt.new_tokens
    max_len = P + N + 4 * (k + 1) + 64
    model = build_model(cfg, dev, n_draft, opt.residual_scale, seed=0)
    model.setup_caches(1, max_len, backend=backend)
    assert model.ops.name == backend, model.ops.name
    g = torch.Generator(device="cpu").manual_seed(1)
    prompt = torch.randint(0, cfg["vocab_size"], (1, P), generator=g).to(dev)
    r = Runner(model, max_len + k + 2)
    fused = dev.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    use_graph = dev.type == "cuda"
    wb = weight_bytes(model)
    a = model.args
    kv_per_pos = 2 * a.n_layers * a.n_kv_heads * a.head_dim * (2 if dev.type == "cuda" else 4)

    with torch.no_grad():
        # sanity: the graph-friendly forward reproduces the engine's own forward
        r.reset(prompt)
        ref_logits = model(prompt[:, P - 1 : P], P - 1)
        same_fwd = {}
        for f in (False, True) if fused else (False,):
            r.fused = f
            r.reset(prompt)
            mine = r.forward(prompt[:, P - 1 : P], r.L - 1)
            same_fwd[f] = float((ref_logits - mine).abs().max())

        results: dict[str, Any] = {}
        runs = [("target-only, torch layers", 1, False)] if fused else []
        runs += [("target-only", 1, fused), (f"target-only padded T={k + 1}", k + 1, fused)]
        for label, width, f in runs:
            r.fused = f
            r.reset(prompt)
            r.target_step(width)  # compiles the kernels
            step = graphed(lambda w=width: r.target_step(w), dev, use_graph)
            r.reset(prompt)
            sync(dev)
            t = time.perf_counter()
            for _ in range(N):
                step()
            sync(dev)
            dt = time.perf_counter() - t
            toks = r.seq[0, P : P + N].clone()
            ctx = P + N / 2
            bytes_tok = wb + kv_per_pos * ctx
            gbs = bytes_tok * N / dt / 1e9
            results[label] = toks
            if width == 1:
                state["_base_tok_s"] = N / dt
            record(
                "e2e", model=name, mode=label, tok_s=round(N / dt, 1), ms_per_tok=round(dt / N * 1e3, 3),
                GBs=round(gbs, 1), pct_copy_bw=round(100 * gbs / state.get("copy_gbs", float("nan")), 1),
                weights_GB=round(wb / 1e9, 3), logits_maxabs_vs_engine_forward=same_fwd[f],
            )  # fmt: skip
            del step
        r.fused = fused
        if fused:
            a_, b_ = results["target-only, torch layers"], results["target-only"]
            record("e2e", model=name, mode="fused vs torch layers: same greedy tokens",
                   identical=bool(torch.equal(a_, b_)), first_divergence=int((a_ != b_).nonzero()[0, 0]) if not torch.equal(a_, b_) else len(a_))  # fmt: skip

        # Draft step and verify step timed on their own (each one graph), for Leviathan's formula.
        r.reset(prompt)
        pos = r.L - 1
        tok1 = r.seq[:, P - 1 : P].clone()
        blk = r.seq[:, P - 1 : P + k].clone()
        draft_fn = graphed(lambda: r.forward(tok1, pos, n_draft), dev, use_graph)
        verify_fn = graphed(lambda: r.forward(blk, pos), dev, use_graph)
        t_draft = bench(draft_fn, dev, reps=30)
        t_verify = bench(verify_fn, dev, reps=30)
        t_target = bench(graphed(lambda: r.forward(tok1, pos), dev, use_graph), dev, reps=30)
        del draft_fn, verify_fn

        r.reset(prompt)
        r.spec_iter(k, n_draft)
        it = graphed(lambda: r.spec_iter(k, n_draft), dev, use_graph)
        r.reset(prompt)
        sync(dev)
        t = time.perf_counter()
        iters = 0
        while True:
            for _ in range(8):
                it()
            iters += 8
            if int(r.L) - P >= N:  # one host read per 8 iterations
                break
        sync(dev)
        dt = time.perf_counter() - t
        made = int(r.L) - P
        acc = made - iters
        spec = r.seq[0, P : P + N].clone()
        tok_iter = made / iters
        alpha = acc / (iters * k)
        c = t_draft / t_target
        predicted = tok_iter / (k * t_draft + t_verify)
        leviathan_tok_iter = (1 - alpha ** (k + 1)) / (1 - alpha) if alpha < 1 else k + 1
        # The i.i.d. acceptance rate that Leviathan's E[tokens/iter] = (1-a^(k+1))/(1-a) maps to
        # the measured tokens/iter (acceptances here are correlated, so the two alphas differ).
        lo_a, hi_a = 0.0, 1.0
        for _ in range(60):
            mid = (lo_a + hi_a) / 2
            if (1 - mid ** (k + 1)) / (1 - mid) < tok_iter:
                lo_a = mid
            else:
                hi_a = mid
        base = results["target-only"]
        padded = results[f"target-only padded T={k + 1}"]

        def first_diff(x: torch.Tensor, y: torch.Tensor) -> int:
            d = (x != y).nonzero()
            return int(d[0, 0]) if len(d) else len(x)

        record(
            "e2e", model=name, mode=f"speculative k={k} draft=layers:{n_draft}", tok_s=round(made / dt, 1),
            ms_per_tok=round(dt / made * 1e3, 3), tokens_per_iter=round(tok_iter, 3),
            alpha_accept_rate=round(alpha, 3), alpha_leviathan_implied=round(lo_a, 3), leviathan_tokens_per_iter=round(leviathan_tok_iter, 3),
            draft_ms=round(t_draft * 1e3, 3), verify_ms=round(t_verify * 1e3, 3), target_ms=round(t_target * 1e3, 3),
            c=round(c, 3), verify_over_target=round(t_verify / t_target, 3),
            predicted_tok_s=round(predicted, 1), pct_of_predicted=round(100 * made / dt / predicted, 1),
            speedup_vs_target_only=round((made / dt) / state["_base_tok_s"], 2),
            greedy_identical_to_target=bool(torch.equal(spec, base)), first_divergence=first_diff(spec, base),
            greedy_identical_to_padded_target=bool(torch.equal(spec, padded)),
            first_divergence_padded=first_diff(spec, padded),
            target_vs_padded_identical=bool(torch.equal(base, padded)),
        )  # fmt: skip
        del it
        state[name] = {"prompt": prompt.cpu(), "tokens": base.cpu(), "n_draft": n_draft}
    if opt.hf:
        section_hf(name, model, cfg, dev, state, opt)
    model = r = None  # free before the next shape
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
                tok_s=round(N / dt, 1),
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
    ap.add_argument("--hf-tokens", type=int, default=64)
    ap.add_argument("--no-hf", dest="hf", action="store_false")
    ap.add_argument("--no-hf-static", dest="hf_static", action="store_false")
    ap.add_argument("--hf-static-models", default="SmolLM2-1.7B,tiny")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--no-kernel-times", dest="kernel_times", action="store_false")
    ap.add_argument(
        "--budget-s", type=float, default=560.0, help="stop starting sections after this"
    )
    opt = ap.parse_args()
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
