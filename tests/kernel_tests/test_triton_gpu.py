"""GPU-only checks of the Triton kernels (run on the lent H100: ``pytest -m gpu tests/kernel_tests``).

bf16 attention against the reference, bit-exact batch invariance of verification attention on the
real compiler, exact sampling/verification at vocabulary sizes the interpreter is too slow for,
and CUDA-graph capture of the fused verification (no host synchronisation inside).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("triton", reason="triton is not installed")

from ponder.local.kernels import _reference as ref  # noqa: E402
from ponder.local.kernels import _triton as tri  # noqa: E402

from ._cases import attention_inputs, chain_inputs, sample_inputs  # noqa: E402

DEV = "cuda"


@pytest.mark.parametrize("V", [49152, 128256, 151936])
@pytest.mark.parametrize("B", [1, 8])
def test_verify_chain_exact_large_vocab(B, V):
    for seed, mode in enumerate(["random", "close", "equal", "greedy"]):
        x, q, p, u, e = chain_inputs(B, 4, V, seed=seed, mode=mode, device=DEV)
        out, n = tri.verify_chain(x, q, p, u, e)
        out_ref, n_ref = ref.verify_chain(x, q, p, u, e)
        assert torch.equal(n, n_ref) and torch.equal(out, out_ref)


@pytest.mark.parametrize("V", [49152, 128256])
def test_sample_exact_large_vocab(V):
    for seed in range(3):
        logits, temp, top_k, top_p, u = sample_inputs(8, V, seed=seed, device=DEV)
        assert torch.equal(
            tri.sample(logits, temp, top_k, top_p, u), ref.sample(logits, temp, top_k, top_p, u)
        )


def test_verify_chain_in_cuda_graph():
    x, q, p, u, e = chain_inputs(2, 4, 32000, seed=5, mode="close", device=DEV)
    tri.verify_chain(x, q, p, u, e)  # compile and allocate the workspace outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, n = tri.verify_chain(x, q, p, u, e)
    for seed in range(4):
        nx, nq, np_, nu, ne = chain_inputs(2, 4, 32000, seed=10 + seed, mode="close", device=DEV)
        for dst, src in zip((x, q, p, u, e), (nx, nq, np_, nu, ne), strict=True):
            dst.copy_(src)
        graph.replay()
        out_ref, n_ref = ref.verify_chain(x, q, p, u, e)
        assert torch.equal(out, out_ref) and torch.equal(n, n_ref)


@pytest.mark.parametrize(
    "case",
    [
        (1, 32, 8, 1, 128, 4096, 1000),  # Llama-3.1-8B decode, split-KV
        (1, 32, 8, 5, 128, 4096, 3000),  # 8B verify
        (8, 9, 3, 5, 64, 1024, 200),  # SmolLM2-135M verify, batch 8
        (1, 32, 32, 64, 64, 512, 0),  # 1.7B prefill
    ],
)
def test_attention_bf16_matches_reference(case):
    q, kc, vc, sp = attention_inputs(*case, seed=0, dtype=torch.bfloat16, device=DEV)
    got = tri.attention(q, kc, vc, sp).float()
    want = ref.attention(q.float(), kc.float(), vc.float(), sp)
    err = (got - want).norm() / want.norm()
    assert err < 1e-2, err


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("S", [1024, 4096])
def test_attention_batch_invariant_on_gpu(dtype, S):
    B, Hq, Hkv, T, D = 1, 32, 8, 5, 128
    q, kc, vc, _ = attention_inputs(B, Hq, Hkv, T, D, S, 0, seed=3, dtype=dtype, device=DEV)
    start = torch.tensor([S // 2], device=DEV)
    block = tri.attention(q, kc, vc, start)
    for t in range(T):
        alone = tri.attention(q[:, :, t : t + 1].contiguous(), kc, vc, start + t)
        assert torch.equal(alone[:, :, 0], block[:, :, t])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("T", "start"), [(1, 1000), (5, 3000), (64, 0)])
def test_attention_at_head_dim_256_launches_on_this_gpu(dtype, T, start):
    """Gemma 3's heads: float32 at D=256 once needed 283-344 KB of shared memory (227 KB on an H100)."""
    q, kc, vc, sp = attention_inputs(1, 8, 4, T, 256, 4096, start, seed=0, dtype=dtype, device=DEV)
    got = tri.attention(q, kc, vc, sp).float()
    want = ref.attention(q.float(), kc.float(), vc.float(), sp)
    err = (got - want).norm() / want.norm()
    assert err < (1e-4 if dtype == torch.float32 else 1e-2), err


def test_a_long_prefill_needs_no_scratch_beyond_its_output():
    """16k queries over a 32k cache (the 8B head layout): the split-KV accumulator of old would
    have been (1, 32, 16384, 64, 128) float32, 17 GB."""
    B, Hq, Hkv, T, D, S = 1, 32, 8, 16384, 128, 32768
    g = torch.Generator(device=DEV).manual_seed(0)
    q = torch.randn(B, Hq, T, D, device=DEV, generator=g, dtype=torch.bfloat16)
    kc = torch.randn(B, Hkv, S, D, device=DEV, generator=g, dtype=torch.bfloat16)
    vc = torch.randn(B, Hkv, S, D, device=DEV, generator=g, dtype=torch.bfloat16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = tri.attention(q, kc, vc, 0)
    torch.cuda.synchronize()
    scratch = torch.cuda.max_memory_allocated() - base - out.numel() * out.element_size()
    assert scratch < 16 << 20, f"{scratch / 2**20:.1f} MiB of scratch"
    kf, vf = kc.float(), vc.float()
    for t in (0, 1, 777, 8191, T - 1):  # rows against the reference (query t sees keys [0, t])
        want = ref.attention(q[:, :, t : t + 1].float(), kf, vf, torch.tensor([t], device=DEV))
        err = (out[:, :, t : t + 1].float() - want).norm() / want.norm()
        assert err < 1e-2, (t, err)
