"""Triton kernels == torch references, exactly, on CPU under TRITON_INTERPRET=1 (fp32).

Sampling ops get the same uniform and exponential noise, so the tokens must be identical.
Attention is compared to rounding (1e-5) and checked for batch invariance bit for bit.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install 'ponder[triton]')")
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA and TRITON_INTERPRET is not 1", allow_module_level=True)

from ponder.local.kernels import _reference as ref  # noqa: E402
from ponder.local.kernels import _triton as tri  # noqa: E402
from ponder.local.kernels import get_ops  # noqa: E402

from ._cases import attention_inputs, chain_inputs, sample_inputs  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_dispatch_returns_the_triton_kernels():
    ops = get_ops(DEVICE, backend="triton")
    assert ops.name == "triton"
    assert ops.verify_chain is tri.verify_chain and ops.sample is tri.sample


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["random", "close", "equal", "zero_residual", "greedy"])
@pytest.mark.parametrize(("B", "k", "V"), [(1, 4, 97), (3, 5, 3000), (2, 1, 33), (2, 7, 20000)])
def test_verify_chain_matches_reference(B, k, V, mode):
    seen_accepts = set()
    for seed in range(3):
        x, q, p, u, e = chain_inputs(B, k, V, seed=seed, mode=mode, device=DEVICE)
        out_ref, n_ref = ref.verify_chain(x, q, p, u, e)
        out, n = tri.verify_chain(x, q, p, u, e)
        assert out.dtype == torch.int64 and n.dtype == torch.int64
        assert torch.equal(n, n_ref)
        assert torch.equal(out, out_ref), (out, out_ref)
        seen_accepts.update(n.tolist())
    if mode == "equal":
        assert seen_accepts == {k}  # every draft accepted: the last token is the bonus
    if mode == "zero_residual":
        assert seen_accepts == {0}  # q = 2p rejects at once, and the residual is all zero


def test_verify_chain_padding_and_workspace_reuse():
    # Repeated calls reuse the self-resetting workspace; a stale maximum would leak a token.
    for seed in range(6):
        B, k, V = 4, 6, 5000
        x, q, p, u, e = chain_inputs(B, k, V, seed=100 + seed, mode="close", device=DEVICE)
        out, n = tri.verify_chain(x, q, p, u, e)
        out_ref, n_ref = ref.verify_chain(x, q, p, u, e)
        assert torch.equal(out, out_ref) and torch.equal(n, n_ref)
        pos = torch.arange(k + 1, device=DEVICE)[None, :]
        assert bool(((out == -1) == (pos > n[:, None])).all())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("B", "V", "ties", "seeds"),
    [
        (8, 257, False, 3),
        (8, 257, True, 3),
        (8, 3000, False, 2),
        (8, 3000, True, 2),
        (2, 20000, False, 1),
    ],
)
def test_sample_matches_reference(B, V, ties, seeds):
    for seed in range(seeds):
        logits, temp, top_k, top_p, u = sample_inputs(B, V, seed=seed, ties=ties, device=DEVICE)
        want = ref.sample(logits, temp, top_k, top_p, u)
        got = tri.sample(logits, temp, top_k, top_p, u)
        assert got.dtype == torch.int64
        assert torch.equal(got, want), (got, want, temp, top_k, top_p)


def test_sample_greedy_breaks_ties_towards_lowest_id():
    logits = torch.zeros(2, 500, device=DEVICE)
    logits[0, [17, 300]] = 5.0
    logits[1, [499, 3]] = 2.0
    zeros = torch.zeros(2, device=DEVICE)
    got = tri.sample(logits, zeros, torch.zeros(2, dtype=torch.long, device=DEVICE),
                     torch.ones(2, device=DEVICE), torch.rand(2, device=DEVICE))  # fmt: skip
    assert got.tolist() == [17, 3]


def test_sample_top_k_one_is_argmax_and_uniform_sweeps_the_kept_set():
    V = 1000
    logits, *_ = sample_inputs(1, V, seed=7, device=DEVICE)
    one = torch.ones(1, device=DEVICE)
    for u in (0.0, 0.3, 0.999):
        uu = torch.full((1,), u, device=DEVICE)
        got = tri.sample(logits, one, torch.ones(1, dtype=torch.long, device=DEVICE), one, uu)
        assert got.item() == logits.argmax().item()
    # top-k 4: sweeping u visits exactly the 4 largest logits, in ascending id order.
    k4 = torch.full((1,), 4, dtype=torch.long, device=DEVICE)
    picks = [tri.sample(logits, one, k4, one, torch.full((1,), u, device=DEVICE)).item()
             for u in torch.linspace(0, 0.999, 16).tolist()]  # fmt: skip
    assert sorted(set(picks)) == sorted(logits[0].topk(4).indices.tolist())
    assert picks == sorted(picks)


ATTN_CASES = [
    # B, Hq, Hkv, T, D, S, start
    (1, 4, 2, 1, 16, 40, 10),  # decode, GQA 2
    (2, 6, 2, 5, 32, 64, [3, 20]),  # verify, per-row start positions
    (1, 2, 2, 30, 16, 40, 0),  # prefill from position 0
    (2, 4, 1, 5, 16, 1500, [700, 1200]),  # split-KV path (S > 1024), MQA
    (1, 4, 4, 1, 16, 1100, 1099),  # split-KV decode at the end of the cache
]


@pytest.mark.parametrize("case", ATTN_CASES)
def test_attention_matches_reference(case):
    q, kc, vc, sp = attention_inputs(*case, seed=1, device=DEVICE)
    want = ref.attention(q, kc, vc, sp)
    got = tri.attention(q, kc, vc, sp)
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", [c for c in ATTN_CASES if 1 < c[3] <= 16])
def test_attention_is_batch_invariant(case):
    """A position's output is the same whether decoded alone or verified in a block.

    Bit identity is a property of the compiled kernel (one tile shape, one summation order) and
    is checked on the GPU (test_triton_gpu.py::test_attention_batch_invariant_on_gpu). Under the
    interpreter numpy does the arithmetic, and on some CPUs (seen on an AVX-512 AMD EPYC, numpy
    2.3 and 2.4) it rounds a row differently by its place in the tile: a few ulp, so here the
    check is to 2 ulp of float32, far below any real difference (a wrong mask or position)."""
    B, T = case[0], case[3]
    q, kc, vc, sp = attention_inputs(*case, seed=2, device=DEVICE)
    block = tri.attention(q, kc, vc, sp)
    start = sp if isinstance(sp, torch.Tensor) else torch.full((B,), sp, device=DEVICE)
    for t in range(T):
        alone = tri.attention(q[:, :, t : t + 1].contiguous(), kc, vc, start + t)
        torch.testing.assert_close(alone[:, :, 0], block[:, :, t], rtol=0, atol=2.5e-7)


def test_attention_scale_argument():
    q, kc, vc, sp = attention_inputs(1, 2, 1, 3, 16, 20, 5, seed=3, device=DEVICE)
    torch.testing.assert_close(
        tri.attention(q, kc, vc, sp, scale=0.05), ref.attention(q, kc, vc, sp, scale=0.05),
        atol=1e-5, rtol=1e-5,
    )  # fmt: skip


def test_fused_layer_kernels_match_the_engine_modules():
    """add_rmsnorm / rope_kv_append / silu_mul == the engine's RMSNorm, apply_rope, cache update."""
    import torch.nn.functional as F

    from ponder.local._model import RMSNorm, apply_rope
    from ponder.local.kernels import _triton_fused as fused

    g = torch.Generator().manual_seed(0)
    B, T, H, Hkv, D, S = 2, 3, 4, 2, 16, 32
    x = torch.randn(B, T, 64, generator=g).to(DEVICE)
    res = torch.randn(B, T, 64, generator=g).to(DEVICE)
    norm = RMSNorm(64, 1e-5).to(DEVICE)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        out, h = fused.add_rmsnorm(x, res, norm.weight, 1e-5)
        torch.testing.assert_close(h, x + res)
        torch.testing.assert_close(out, norm(x + res), atol=1e-5, rtol=1e-5)
        out0, _ = fused.add_rmsnorm(x, None, norm.weight, 1e-5)
        torch.testing.assert_close(out0, norm(x), atol=1e-5, rtol=1e-5)

    qkv = torch.randn(B, T, (H + 2 * Hkv) * D, generator=g).to(DEVICE)
    angles = torch.randn(S, D // 2, generator=g).repeat(1, 2).to(DEVICE)
    cos, sin = angles.cos(), angles.sin()
    pos = torch.tensor([5, 11], device=DEVICE)
    kc = torch.zeros(B, Hkv, S, D, device=DEVICE)
    vc = torch.zeros(B, Hkv, S, D, device=DEVICE)
    q = fused.rope_kv_append(qkv, cos, sin, pos, kc, vc, H, Hkv)
    qr, kr, vr = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
    for b in range(B):
        p = int(pos[b])
        cb, sb = cos[p : p + T], sin[p : p + T]
        want_q = apply_rope(qr[b : b + 1].view(1, T, H, D).transpose(1, 2), cb, sb)
        want_k = apply_rope(kr[b : b + 1].view(1, T, Hkv, D).transpose(1, 2), cb, sb)
        torch.testing.assert_close(q[b : b + 1], want_q, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(kc[b : b + 1, :, p : p + T], want_k, atol=1e-6, rtol=1e-6)
        assert torch.equal(vc[b, :, p : p + T], vr[b].view(T, Hkv, D).transpose(0, 1))
    others = torch.ones(S, dtype=torch.bool)
    others[5 : 5 + T] = False
    assert not kc[0, :, others].any()  # nothing written outside [pos, pos + T)

    gu = torch.randn(B, T, 2 * 40, generator=g).to(DEVICE)
    gate, up = gu.split(40, dim=-1)
    torch.testing.assert_close(fused.silu_mul(gu), F.silu(gate) * up, atol=1e-6, rtol=1e-6)


class _Launches:
    """Records the grid and meta-parameters of every launch of a jitted kernel."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            self.calls.append((grid, kwargs))
            return launch(*args, **kwargs)

        return run


def _smem_estimate(bm: int, bn: int, d: int, elem: int) -> int:
    """Shared memory of the attention kernel's tiles as Triton compiles them for sm_90: q, K and V
    double-buffered, and the probabilities (283 KB / 344 KB at D=256 fp32, BLOCK_N=64)."""
    return elem * (bm * d + 4 * bn * d + bm * bn)


@pytest.mark.parametrize(("T", "start"), [(1, 30), (5, 20), (24, 0)])
def test_attention_at_head_dim_256_in_float32_fits_an_h100(T, start, monkeypatch):
    """Gemma 3's heads (D=256) in float32: tiles chosen within an H100's 227 KB per block."""
    spy = _Launches(tri._attn_kernel)
    monkeypatch.setattr(tri, "_attn_kernel", spy)
    q, kc, vc, sp = attention_inputs(1, 2, 1, T, 256, 48, start, seed=4, device=DEVICE)
    torch.testing.assert_close(tri.attention(q, kc, vc, sp), ref.attention(q, kc, vc, sp), atol=1e-5, rtol=1e-5)
    ((_, meta),) = spy.calls
    assert meta["D"] == 256
    assert _smem_estimate(meta["BLOCK_M"], meta["BLOCK_N"], 256, 4) <= 227 * 1024, meta


def test_attention_tiles_fit_every_head_and_dtype_and_refuse_what_cannot():
    for D in (64, 128, 256):
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            for T in (1, 5, 16, 17, 2048):
                bm, bn = tri.attention_blocks(D, dtype, T)
                assert _smem_estimate(bm, bn, D, dtype.itemsize) <= 227 * 1024
                if T <= 16:
                    assert (bm, bn) == tri.attention_blocks(D, dtype, 1)  # decode == verify tiles
    assert tri.attention_blocks(128, torch.bfloat16, 1) == (16, 64)  # the common case keeps its tile
    with pytest.raises(ValueError, match="bfloat16"):
        tri.attention_blocks(2048, torch.float32, 1)


def test_prefill_scratch_does_not_grow_with_the_cache(monkeypatch):
    """A long prompt over a long cache: no split-KV accumulator (B, Hq, T, nsplit, D), only the
    output, whatever T and the capacity; and the keys past a block's last query are skipped."""
    from torch.utils._python_dispatch import TorchDispatchMode

    sizes = []

    class Allocations(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func._overloadpacket.__name__.startswith("empty"):
                sizes.append(out.numel())
            return out

    spy = _Launches(tri._attn_kernel)
    monkeypatch.setattr(tri, "_attn_kernel", spy)
    q, kc, vc, _ = attention_inputs(1, 4, 2, 40, 16, 1600, 0, seed=5, device=DEVICE)
    with Allocations():
        got = tri.attention(q, kc, vc, 0)
    torch.testing.assert_close(got, ref.attention(q, kc, vc, 0), atol=1e-5, rtol=1e-5)
    assert max(sizes) <= q.numel(), sizes  # the output, nothing of size T x capacity
    ((grid, _),) = spy.calls
    assert grid[2] == 1  # one program per (head group, row block): no split over the 1600 keys


def _aten_ops(fn):
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = set()

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(func._overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with Ops():
        out = fn()
    return out, seen


@pytest.mark.parametrize(
    ("V", "ties", "seed"),
    [
        (257, True, 0),
        pytest.param(257, False, 1, marks=pytest.mark.slow),
        pytest.param(3000, True, 0, marks=pytest.mark.slow),  # two slices per row: tie ranks across programs
        pytest.param(5000, False, 2, marks=pytest.mark.slow),
    ],
)
def test_warp_probs_find_the_sorted_references_cut_without_a_sort(V, ties, seed):
    """Greedy, plain, top-k, top-p and both (k = 1 and k = V among them), with and without ties:
    the same tokens kept as the reference's stable sort keeps, with the same probabilities."""
    logits, temp, top_k, top_p, _ = sample_inputs(8, V, seed=seed, ties=ties, device=DEVICE)
    got, seen = _aten_ops(lambda: tri.warp_probs(logits, temp, top_k, top_p))
    want = ref.warp_probs(logits, temp, top_k, top_p)
    assert not seen & {"sort", "topk", "argsort", "kthvalue", "msort"}, seen
    assert torch.equal(got > 0, want > 0)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
